-- ROUTINE LOAD jobs consuming the cubepacs topics unchanged (JSON rows). Replace the broker list.
USE cubepacs;

CREATE ROUTINE LOAD cubepacs.load_object_meta ON dicom_object_meta
PROPERTIES ("format" = "json", "strip_outer_array" = "false", "max_batch_interval" = "10")
FROM KAFKA ("kafka_broker_list" = "redpanda:9092", "kafka_topic" = "log_queue",
            "property.group.id" = "doris-object-meta", "property.kafka_default_offsets" = "OFFSET_BEGINNING");

CREATE ROUTINE LOAD cubepacs.load_image_meta ON dicom_image_meta
PROPERTIES ("format" = "json", "strip_outer_array" = "false", "max_batch_interval" = "10")
FROM KAFKA ("kafka_broker_list" = "redpanda:9092", "kafka_topic" = "dicom_image_queue",
            "property.group.id" = "doris-image-meta", "property.kafka_default_offsets" = "OFFSET_BEGINNING");

CREATE ROUTINE LOAD cubepacs.load_state_meta ON dicom_state_meta
PROPERTIES ("format" = "json", "strip_outer_array" = "false", "max_batch_interval" = "10")
FROM KAFKA ("kafka_broker_list" = "redpanda:9092", "kafka_topic" = "dicom_state_queue",
            "property.group.id" = "doris-state-meta", "property.kafka_default_offsets" = "OFFSET_BEGINNING");
