"""The series cube (.dcbs): writer, reader, metadata, codecs, QC, DICOM import/export."""
