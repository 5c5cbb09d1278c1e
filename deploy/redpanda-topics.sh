#!/usr/bin/env bash
# Create the topics cubepacs uses on Redpanda (or Kafka: same names with kafka-topics.sh).
# storage_queue carries storage events (key: series UID, so a series stays in one partition).
set -euo pipefail
# cubepacs' indexers use a 5 s Kafka session (a dead indexer's partitions move after it); Redpanda, like Kafka
# (group.min.session.timeout.ms), refuses sessions shorter than 6 s unless told otherwise
rpk cluster config set group_min_session_timeout_ms 1000
for t in storage_queue dicom_state_queue dicom_image_queue log_queue; do
  rpk topic create "$t" --partitions "${PARTITIONS:-6}" --replicas "${REPLICAS:-3}" || true
done
