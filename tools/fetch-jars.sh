#!/usr/bin/env bash
# Fetches the jars stockmax needs from Maven Central into .cache/jars/, and builds stockmax's own JVM
# functions (jvm/) (idempotent: a stamp per pom, and per jvm/ source state, records what was done, so a
# re-run with nothing changed does nothing).
#   .cache/jars/flink/  the Flink Kafka connector and stockmax-flink-functions.jar (added to the PyFlink job)
#   .cache/jars/kafka/  Apache Kafka's broker with its runtime dependencies (tools/kafka_local.py runs it)
# Maven's own download cache is ~/.m2/repository unless STOCKMAX_MAVEN_REPO says otherwise, so a second
# clone on the same machine downloads nothing.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
repo="${STOCKMAX_MAVEN_REPO:-$HOME/.m2/repository}"

maven() {  # quiet unless it fails (Debian's Maven 3.8 prints colour codes even with -q)
  local out
  out="$(mvn -q -B -Dmaven.repo.local="$repo" "$@" 2>&1)" || { echo "$out" >&2; return 1; }
}

fetch() {  # fetch POM DEST
  local pom="$root/tools/maven/$1" dest="$root/.cache/jars/$2"
  local stamp="$dest/.fetched-$(sha256sum "$pom" | cut -c1-16)"
  if [ -f "$stamp" ]; then return 0; fi
  echo "fetching $2 jars (Maven: $1) ..."
  rm -rf "$dest" && mkdir -p "$dest"
  maven -f "$pom" dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$dest" \
    || { echo "fetch-jars: Maven could not fetch $1 (is Maven Central reachable?)" >&2; exit 1; }
  touch "$stamp"
  echo "  $(ls "$dest"/*.jar | wc -l) jars in .cache/jars/$2"
}

build_functions() {  # jvm/ -> .cache/jars/flink/stockmax-flink-functions.jar
  local dest="$root/.cache/jars/flink"
  local stamp="$dest/.built-$(cd "$root" && find jvm -type f | sort | xargs sha256sum | sha256sum | cut -c1-16)"
  if [ -f "$stamp" ]; then return 0; fi
  echo "building stockmax-flink-functions.jar (Maven: jvm/pom.xml) ..."
  rm -f "$dest"/.built-*
  maven -f "$root/jvm/pom.xml" -DskipTests package \
    || { echo "fetch-jars: Maven could not build jvm/ (see above)" >&2; exit 1; }
  cp "$root/.cache/build/jvm/stockmax-flink-functions.jar" "$dest/"
  touch "$stamp"
}

command -v mvn >/dev/null || { echo "fetch-jars: Maven (mvn) is required; install it (apt-get install maven)" >&2; exit 1; }
fetch flink-connectors.pom.xml flink
fetch kafka-broker.pom.xml kafka
build_functions  # after the connector: a new connector pom empties .cache/jars/flink
