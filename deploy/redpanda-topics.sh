#!/usr/bin/env bash
# Create the topics cubepacs uses on Redpanda (or Kafka: same names with kafka-topics.sh).
# storage_queue carries storage events (key: series UID, so a series stays in one partition).
set -euo pipefail
for t in storage_queue dicom_state_queue dicom_image_queue log_queue; do
  rpk topic create "$t" --partitions "${PARTITIONS:-6}" --replicas "${REPLICAS:-3}" || true
done
