#!/usr/bin/env bash
# Fetches Apache Kafka (KRaft, server side) and a log4j2 backend as plain jars from
# Maven Central into the cache, once per version: a generated pom plus
# `mvn dependency:copy-dependencies`. No distribution tarball is needed to run
# `kafka.Kafka` and `kafka.tools.StorageTool` from a classpath. Kafka's poms ask for
# slf4j-api 1.7, which cannot see an slf4j2 backend: slf4j-api 2 is pinned on top.
. "$(dirname "$0")/lib.sh"
out="$CACHE_DIR/kafka-$KAFKA_VERSION"
[ -f "$out/.complete" ] && { echo "$out"; exit 0; }
command -v mvn >/dev/null || die "kafka: need mvn (apt-get install -y maven) and java >= 17"
work="$(mktemp -d)"; trap 'rm -rf "$work"' EXIT
log "fetching Kafka $KAFKA_VERSION jars (first run only)"
cat >"$work/pom.xml" <<POM
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>ductape.local</groupId>
  <artifactId>kafka-fetch</artifactId>
  <version>0</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>$KAFKA_VERSION</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId><version>$LOG4J_VERSION</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j2-impl</artifactId><version>$LOG4J_VERSION</version></dependency>
    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-api</artifactId><version>$SLF4J_VERSION</version></dependency>
  </dependencies>
  <build><plugins><plugin>
    <groupId>org.apache.maven.plugins</groupId><artifactId>maven-dependency-plugin</artifactId><version>3.8.1</version>
  </plugin></plugins></build>
</project>
POM
rm -rf "$out.tmp"; mkdir -p "$out.tmp"
mvn -B -q -Dstyle.color=never -f "$work/pom.xml" dependency:copy-dependencies \
  -DincludeScope=runtime -DoutputDirectory="$out.tmp/libs" >&2
ls "$out.tmp/libs"/kafka_2.13-"$KAFKA_VERSION".jar >/dev/null
touch "$out.tmp/.complete"
rm -rf "$out"; mv "$out.tmp" "$out"
echo "$out"
