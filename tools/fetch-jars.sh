#!/usr/bin/env bash
# Fetches the jars stockmax needs from Maven Central into .cache/jars/ (idempotent: a stamp per pom
# records what was fetched, so a re-run with nothing changed does nothing).
#   .cache/jars/flink/  the Flink Kafka connector (added to the PyFlink job)
#   .cache/jars/kafka/  Apache Kafka's broker with its runtime dependencies (tools/kafka_local.py runs it)
# Maven's own download cache is ~/.m2/repository unless STOCKMAX_MAVEN_REPO says otherwise, so a second
# clone on the same machine downloads nothing.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
repo="${STOCKMAX_MAVEN_REPO:-$HOME/.m2/repository}"

fetch() {  # fetch POM DEST
  local pom="$root/tools/maven/$1" dest="$root/.cache/jars/$2"
  local stamp="$dest/.fetched-$(sha256sum "$pom" | cut -c1-16)"
  if [ -f "$stamp" ]; then return 0; fi
  echo "fetching $2 jars (Maven: $1) ..."
  rm -rf "$dest" && mkdir -p "$dest"
  mvn -q -B -f "$pom" -Dmaven.repo.local="$repo" \
      dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$dest" \
    || { echo "fetch-jars: Maven could not fetch $1 (is Maven Central reachable?)" >&2; exit 1; }
  touch "$stamp"
  echo "  $(ls "$dest"/*.jar | wc -l) jars in .cache/jars/$2"
}

command -v mvn >/dev/null || { echo "fetch-jars: Maven (mvn) is required; install it (apt-get install maven)" >&2; exit 1; }
fetch flink-connectors.pom.xml flink
fetch kafka-broker.pom.xml kafka
