#!/usr/bin/env bash
# Local single-node Apache Kafka 4.1.1 (KRaft, combined broker+controller) for riskstream.
#
#   deploy/kafka/kafka.sh start    # fetch jars, format storage, make the TLS certificates (each on first use), start, create topics
#   deploy/kafka/kafka.sh stop     # SIGTERM, wait up to 30 s, then SIGKILL
#   deploy/kafka/kafka.sh status   # exit 0 = running and answering, 3 = stopped, 1 = process up but not answering
#   deploy/kafka/kafka.sh topics   # list the topics
#   deploy/kafka/kafka.sh delete-topics NAME...   # delete these topics (exact names)
#
# Environment:
#   RISKSTREAM_KAFKA_HOME   cache/state dir (default ~/.cache/riskstream/kafka-4.1.1)
#   RISKSTREAM_KAFKA_RESET  =1 on start: wipe the data dir (stops a running broker first)
#   RISKSTREAM_KAFKA_JVM_OPTS  the broker JVM's heap and GC flags (default: 1 GB heap, the
#                           serial collector with a 128 MB young generation; see DEFAULT_JVM_OPTS)
#   JAVA_HOME               optional; otherwise `java`/`javac` from PATH (Java 17+). javac is optional:
#                           with it, topics are ensured by one cached Admin-client JVM instead of
#                           one TopicCommand JVM per topic.
#
# Listeners (all on 127.0.0.1):
#   9092  PLAINTEXT       what everything uses by default
#   9093  CONTROLLER      KRaft controller (internal)
#   9094  SASL_PLAINTEXT  mechanism PLAIN, user `riskstream`, password `riskstream-secret` (test only)
#   9095  SSL             TLS with a throwaway CA made on first start: $RISKSTREAM_KAFKA_HOME/tls/ca.pem
#                         is what a client's `ssl.ca.location` needs. A client certificate is optional
#                         (mTLS) and checked against the same CA when given: tls/client.p12 is one
#                         (PKCS#12, password `riskstream-local`, CN=riskstream)
# server.properties is rewritten on every start, so an existing cache gets new listeners too.
# Needs `mvn` only for the first fetch, and the JDK's `keytool` for the first TLS start.
set -euo pipefail

readonly KAFKA_VERSION=4.1.1
readonly SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
readonly POM="$SCRIPT_DIR/pom.xml"
readonly KHOME="${RISKSTREAM_KAFKA_HOME:-$HOME/.cache/riskstream/kafka-$KAFKA_VERSION}"
readonly LIBS="$KHOME/libs"
readonly DATA="$KHOME/data"
readonly PROPS="$KHOME/server.properties"
readonly LOG4J="$KHOME/log4j2.xml"
readonly TOOLS_LOG4J="$KHOME/tools-log4j2.xml"
readonly PIDFILE="$KHOME/kafka.pid"
readonly LOGFILE="$KHOME/kafka.log"
readonly LOCKFILE="$KHOME/.kafka.lock"
readonly HOST=127.0.0.1
readonly PORT=9092
readonly CONTROLLER_PORT=9093
readonly SASL_PORT=9094
readonly SSL_PORT=9095
# Test credentials of the SASL/PLAIN listener; a local throwaway broker, not a secret.
readonly SASL_USER=riskstream
readonly SASL_PASSWORD=riskstream-secret
readonly TLS="$KHOME/tls"
# Keystore password of the throwaway broker certificate (it guards nothing but this cache).
readonly TLS_STOREPASS=riskstream-local
readonly BOOTSTRAP="$HOST:$PORT"
readonly START_TIMEOUT_S=60
readonly STOP_TIMEOUT_S=30
# Unique marker on the broker's command line so we can recognise *our* JVM (pid reuse, lost pid file).
readonly MARKER="-Driskstream.kafka.home=$KHOME"

if [[ -n "${JAVA_HOME:-}" && -x "$JAVA_HOME/bin/java" ]]; then
  JAVA="$JAVA_HOME/bin/java"
  JAVAC="$JAVA_HOME/bin/javac"
  KEYTOOL="$JAVA_HOME/bin/keytool"
  [[ -x "$JAVAC" ]] || JAVAC=""
else
  JAVA=java
  JAVAC=$(command -v javac || true) # optional: speeds up topic creation (see ensure_topics)
  KEYTOOL=keytool
fi

# name:partitions (replication factor is always 1)
readonly TOPICS=(
  incidents:6
  sensor-readings:6
  fraud-reports:6
  alerts:6
  alerts.incidents:6
  riskstream.dlq:6
  alert-actions:6
  alerts.cap:1
)

log() { printf 'kafka.sh: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ---------------------------------------------------------------------------------------------
# helpers

port_open() { # host port -> 0 if something accepts TCP connections
  timeout 2 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$1" "$2" 2>/dev/null
}

is_our_broker() { # pid -> 0 if pid is alive and is our kafka.Kafka JVM
  local pid=$1 cmd
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
  [[ "$cmd" == *"$MARKER "* && "$cmd" == *" kafka.Kafka "* ]]
}

broker_pid() { # prints pid of our running broker, returns 1 if none (cleans a stale pid file)
  local pid=""
  if [[ -f "$PIDFILE" ]]; then
    pid=$(tr -dc '0-9' <"$PIDFILE" || true)
    if is_our_broker "$pid"; then
      echo "$pid"
      return 0
    fi
    log "removing stale pid file (pid ${pid:-?} is not running)"
    rm -f "$PIDFILE"
  fi
  # Fallback: pid file lost but our JVM still around (matched by its unique -D marker, fixed string).
  local p
  for p in $(pgrep -f -- "kafka.Kafka" 2>/dev/null || true); do
    if is_our_broker "$p"; then
      echo "$p" >"$PIDFILE"
      echo "$p"
      return 0
    fi
  done
  return 1
}

tool() { # run a Kafka CLI class on our classpath, quiet logging
  "$JAVA" -Xms32m -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
    -Dlog4j2.configurationFile="$TOOLS_LOG4J" -cp "$LIBS/*" "$@"
}

fetch_jars() {
  if [[ -f "$LIBS/kafka_2.13-$KAFKA_VERSION.jar" ]]; then
    return 0
  fi
  command -v mvn >/dev/null || die "mvn not found; needed once to fetch Kafka jars (apt-get install maven)"
  log "fetching Kafka jars from Maven Central into $LIBS ..."
  local tmp="$KHOME/libs.tmp.$$"
  rm -rf "$tmp"
  # mvn -q still emits stray ANSI resets on stdout; keep its output and show it only on failure.
  if ! mvn -q -B -f "$POM" dependency:copy-dependencies -DoutputDirectory="$tmp" >"$KHOME/mvn.log" 2>&1; then
    sed 's/\x1b\[[0-9;]*m//g' "$KHOME/mvn.log" >&2 || true
    rm -rf "$tmp"
    die "maven dependency fetch failed (see $KHOME/mvn.log)"
  fi
  rm -f "$KHOME/mvn.log"
  [[ -f "$tmp/kafka_2.13-$KAFKA_VERSION.jar" ]] || { rm -rf "$tmp"; die "kafka_2.13-$KAFKA_VERSION.jar missing after fetch"; }
  rm -rf "$LIBS"
  mv "$tmp" "$LIBS" # atomic-ish: a half-finished fetch never looks complete
  log "fetched $(find "$LIBS" -name '*.jar' | wc -l) jars"
}

write_configs() {
  cat >"$PROPS" <<EOF
# Generated by deploy/kafka/kafka.sh -- edits are overwritten on every start.
# Single-node KRaft: combined broker + controller, static controller quorum.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$HOST:$CONTROLLER_PORT
listeners=PLAINTEXT://$HOST:$PORT,CONTROLLER://$HOST:$CONTROLLER_PORT,SASL_PLAINTEXT://$HOST:$SASL_PORT,SSL://$HOST:$SSL_PORT
advertised.listeners=PLAINTEXT://$HOST:$PORT,SASL_PLAINTEXT://$HOST:$SASL_PORT,SSL://$HOST:$SSL_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT,SSL:SSL
log.dirs=$DATA

# SASL/PLAIN on $SASL_PORT (riskstream's security tests). No authorizer: an authenticated
# user may do anything, as on the PLAINTEXT listener.
listener.name.sasl_plaintext.sasl.enabled.mechanisms=PLAIN
listener.name.sasl_plaintext.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_$SASL_USER="$SASL_PASSWORD";

# TLS on $SSL_PORT with the throwaway certificates from make_tls. A client certificate is
# optional (requested) and must chain to the same CA when given (mTLS).
listener.name.ssl.ssl.keystore.type=PKCS12
listener.name.ssl.ssl.keystore.location=$TLS/broker.p12
listener.name.ssl.ssl.keystore.password=$TLS_STOREPASS
listener.name.ssl.ssl.truststore.type=PKCS12
listener.name.ssl.ssl.truststore.location=$TLS/truststore.p12
listener.name.ssl.ssl.truststore.password=$TLS_STOREPASS
listener.name.ssl.ssl.client.auth=requested

# Topic defaults
num.partitions=1
default.replication.factor=1
min.insync.replicas=1
auto.create.topics.enable=true
delete.topic.enable=true

# Internal topics on a single node
offsets.topic.replication.factor=1
offsets.topic.num.partitions=6
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=6
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0

# Small-machine settings
num.network.threads=2
num.io.threads=4
num.recovery.threads.per.data.dir=1
background.threads=4
log.segment.bytes=67108864
log.retention.hours=24
log.retention.bytes=536870912
log.retention.check.interval.ms=60000
log.cleaner.threads=1
log.cleaner.dedupe.buffer.size=16777216
socket.send.buffer.bytes=102400
socket.receive.buffer.bytes=102400
socket.request.max.bytes=104857600
EOF

  cat >"$LOG4J" <<'EOF'
<?xml version="1.0" encoding="UTF-8"?>
<!-- Generated by deploy/kafka/kafka.sh. Broker stdout is redirected to kafka.log. -->
<Configuration status="warn">
  <Appenders>
    <Console name="stdout" target="SYSTEM_OUT">
      <PatternLayout pattern="[%d] %p %m (%c)%n"/>
    </Console>
  </Appenders>
  <Loggers>
    <!-- one INFO line when the server is up / shutting down -->
    <Logger name="kafka.server.KafkaRaftServer" level="info"/>
    <Logger name="kafka.Kafka$" level="info"/>
    <Root level="warn">
      <AppenderRef ref="stdout"/>
    </Root>
  </Loggers>
</Configuration>
EOF

  cat >"$TOOLS_LOG4J" <<'EOF'
<?xml version="1.0" encoding="UTF-8"?>
<!-- Generated by deploy/kafka/kafka.sh. CLI tools: errors only, to stderr. -->
<Configuration status="warn">
  <Appenders>
    <Console name="stderr" target="SYSTEM_ERR">
      <PatternLayout pattern="[%d] %p %m (%c)%n"/>
    </Console>
  </Appenders>
  <Loggers>
    <Root level="error">
      <AppenderRef ref="stderr"/>
    </Root>
  </Loggers>
</Configuration>
EOF
}

# A throwaway CA, a broker certificate for 127.0.0.1/localhost and a client certificate
# (CN=riskstream, for mTLS), made once per cache with the JDK's keytool (no openssl needed).
# ca.pem is the PEM a client's `ssl.ca.location` takes; client.p12 what `ssl.keystore.location`
# takes. Built in a temporary dir and moved into place, so a half-made set never looks complete.
make_tls() {
  if [[ -f "$TLS/client.p12" ]]; then # the last file made
    return 0
  fi
  command -v "$KEYTOOL" >/dev/null || die "keytool (from the JDK) not found; needed once to make the TLS certificates"
  log "making a throwaway CA, broker and client certificates in $TLS"
  local tmp="$KHOME/tls.tmp.$$" pw=$TLS_STOREPASS
  rm -rf "$tmp"
  mkdir -p -m 700 "$tmp" # private keys inside, even if throwaway
  kt() { "$KEYTOOL" -J-XX:TieredStopAtLevel=1 -J-XX:+UseSerialGC "$@" >>"$tmp/keytool.log" 2>&1; }
  if ! {
    kt -genkeypair -alias ca -keyalg RSA -keysize 2048 -validity 3650 \
      -dname "CN=riskstream local test CA" -ext bc:c -ext ku:c=keyCertSign,cRLSign \
      -keystore "$tmp/ca.p12" -storetype PKCS12 -storepass "$pw" &&
      kt -exportcert -rfc -alias ca -keystore "$tmp/ca.p12" -storepass "$pw" -file "$tmp/ca.pem" &&
      kt -genkeypair -alias broker -keyalg RSA -keysize 2048 -validity 3650 -dname "CN=localhost" \
        -keystore "$tmp/broker.p12" -storetype PKCS12 -storepass "$pw" &&
      kt -certreq -alias broker -keystore "$tmp/broker.p12" -storepass "$pw" -file "$tmp/broker.csr" &&
      kt -gencert -alias ca -keystore "$tmp/ca.p12" -storepass "$pw" -rfc -validity 3650 \
        -infile "$tmp/broker.csr" -outfile "$tmp/broker.pem" \
        -ext san=ip:$HOST,dns:localhost -ext ku:c=digitalSignature,keyEncipherment -ext eku=serverAuth &&
      kt -importcert -noprompt -alias ca -file "$tmp/ca.pem" -keystore "$tmp/broker.p12" -storepass "$pw" &&
      kt -importcert -noprompt -alias broker -file "$tmp/broker.pem" -keystore "$tmp/broker.p12" -storepass "$pw" &&
      kt -importcert -noprompt -alias ca -file "$tmp/ca.pem" -keystore "$tmp/truststore.p12" -storetype PKCS12 -storepass "$pw" &&
      kt -genkeypair -alias client -keyalg RSA -keysize 2048 -validity 3650 -dname "CN=riskstream" \
        -keystore "$tmp/client.p12" -storetype PKCS12 -storepass "$pw" &&
      kt -certreq -alias client -keystore "$tmp/client.p12" -storepass "$pw" -file "$tmp/client.csr" &&
      kt -gencert -alias ca -keystore "$tmp/ca.p12" -storepass "$pw" -rfc -validity 3650 \
        -infile "$tmp/client.csr" -outfile "$tmp/client.pem" \
        -ext ku:c=digitalSignature,keyEncipherment -ext eku=clientAuth &&
      kt -importcert -noprompt -alias ca -file "$tmp/ca.pem" -keystore "$tmp/client.p12" -storepass "$pw" &&
      kt -importcert -noprompt -alias client -file "$tmp/client.pem" -keystore "$tmp/client.p12" -storepass "$pw"
  }; then
    cat "$tmp/keytool.log" >&2 || true
    rm -rf "$tmp"
    die "keytool failed to make the TLS certificates"
  fi
  rm -f "$tmp/keytool.log" "$tmp/broker.csr" "$tmp/client.csr"
  rm -rf "$TLS"
  mv "$tmp" "$TLS"
}

format_storage() {
  if [[ -f "$DATA/meta.properties" ]]; then
    return 0
  fi
  local cluster_id
  cluster_id=$(tool kafka.tools.StorageTool random-uuid) || die "StorageTool random-uuid failed"
  log "formatting storage in $DATA (cluster id $cluster_id)"
  mkdir -p "$DATA"
  # No --standalone: that flag is for *dynamic* quorums (controller.quorum.bootstrap.servers)
  # and is rejected when controller.quorum.voters is set, as it is here.
  tool kafka.tools.StorageTool format -t "$cluster_id" -c "$PROPS" >&2 ||
    die "StorageTool format failed"
}

wait_for_broker() { # pid
  local pid=$1 deadline=$((SECONDS + START_TIMEOUT_S))
  log "waiting for broker on $BOOTSTRAP (up to ${START_TIMEOUT_S}s)"
  while ((SECONDS < deadline)); do
    if ! kill -0 "$pid" 2>/dev/null; then
      log "broker process $pid exited during startup; last lines of $LOGFILE:"
      tail -n 30 "$LOGFILE" >&2 || true
      rm -f "$PIDFILE"
      exit 1
    fi
    # All listeners are bound together, before the broker serves; check every one.
    if port_open "$HOST" "$PORT" && port_open "$HOST" "$SASL_PORT" && port_open "$HOST" "$SSL_PORT"; then
      return 0
    fi
    sleep 0.5
  done
  log "broker did not open $BOOTSTRAP within ${START_TIMEOUT_S}s; last lines of $LOGFILE:"
  tail -n 30 "$LOGFILE" >&2 || true
  exit 1
}

# Topic creation. Every Kafka CLI call is a JVM launch (~1-2 s each on a small box), and
# TopicCommand creates one topic per call. So when a JDK is available we compile (once, cached
# in $KHOME/classes) a tiny Admin-client helper that waits for the broker, lists topics and
# creates all missing ones in a single JVM. Without javac we fall back to parallel TopicCommands.
write_topic_helper() {
  local src="$KHOME/EnsureTopics.java" tmp="$KHOME/EnsureTopics.java.tmp"
  cat >"$tmp" <<'JAVA'
// Generated by deploy/kafka/kafka.sh.
// usage: EnsureTopics <bootstrap> <timeoutSeconds> name:partitions...   (replication factor 1)
import java.util.*;
import java.util.concurrent.*;
import org.apache.kafka.clients.admin.*;
import org.apache.kafka.common.errors.TopicExistsException;

public class EnsureTopics {
  public static void main(String[] args) throws Exception {
    long deadline = System.currentTimeMillis() + Long.parseLong(args[1]) * 1000L;
    Map<String, Integer> want = new LinkedHashMap<>();
    for (int i = 2; i < args.length; i++) {
      int c = args[i].lastIndexOf(':');
      want.put(args[i].substring(0, c), Integer.parseInt(args[i].substring(c + 1)));
    }
    Properties p = new Properties();
    p.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, args[0]);
    p.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, "5000");
    p.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "10000");
    try (Admin admin = Admin.create(p)) {
      Set<String> existing;
      while (true) { // the port being open does not mean metadata is served yet
        try {
          existing = admin.listTopics().names().get(10, TimeUnit.SECONDS);
          break;
        } catch (ExecutionException | TimeoutException e) {
          if (System.currentTimeMillis() > deadline) {
            System.err.println("broker " + args[0] + " not answering: " + e);
            System.exit(1);
          }
          Thread.sleep(500);
        }
      }
      List<NewTopic> missing = new ArrayList<>();
      List<String> present = new ArrayList<>();
      for (Map.Entry<String, Integer> t : want.entrySet()) {
        if (existing.contains(t.getKey())) present.add(t.getKey());
        else missing.add(new NewTopic(t.getKey(), t.getValue(), (short) 1));
      }
      int failed = 0;
      if (!present.isEmpty()) {
        Map<String, TopicDescription> d = admin.describeTopics(present).allTopicNames().get(30, TimeUnit.SECONDS);
        for (String n : present) {
          int have = d.get(n).partitions().size();
          if (have != want.get(n))
            System.err.println("WARNING: topic " + n + " has " + have + " partitions, expected " + want.get(n));
        }
      }
      if (!missing.isEmpty()) {
        CreateTopicsResult r = admin.createTopics(missing);
        for (NewTopic t : missing) {
          try {
            r.values().get(t.name()).get(30, TimeUnit.SECONDS);
            System.out.println("created " + t.name() + " (" + t.numPartitions() + " partitions)");
          } catch (ExecutionException e) {
            if (e.getCause() instanceof TopicExistsException) continue; // raced with someone else
            System.err.println("failed to create " + t.name() + ": " + e.getCause());
            failed++;
          }
        }
      }
      System.exit(failed == 0 ? 0 : 1);
    }
  }
}
JAVA
  if ! cmp -s "$tmp" "$src"; then
    mv "$tmp" "$src"
    rm -rf "$KHOME/classes"
  else
    rm -f "$tmp"
  fi
  if [[ ! -f "$KHOME/classes/EnsureTopics.class" ]]; then
    "$JAVAC" -nowarn -d "$KHOME/classes.tmp.$$" -cp "$LIBS/*" "$src" >&2 || {
      rm -rf "$KHOME/classes.tmp.$$"
      return 1
    }
    rm -rf "$KHOME/classes"
    mv "$KHOME/classes.tmp.$$" "$KHOME/classes"
  fi
}

ensure_topics() {
  local names=("${TOPICS[@]%%:*}")
  if [[ -n "$JAVAC" ]] && write_topic_helper; then
    log "creating topics if missing: ${names[*]}"
    local out
    out=$("$JAVA" -Xms32m -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
      -Dlog4j2.configurationFile="$TOOLS_LOG4J" -cp "$KHOME/classes:$LIBS/*" \
      EnsureTopics "$BOOTSTRAP" "$START_TIMEOUT_S" "${TOPICS[@]}") || die "topic creation failed"
    if [[ -n "$out" ]]; then
      while IFS= read -r line; do log "  $line"; done <<<"$out"
    else
      log "  all topics already present"
    fi
    return 0
  fi
  ensure_topics_cli
}

ensure_topics_cli() {
  # The first call (--list) doubles as the readiness probe and is retried; then the missing
  # topics are created by parallel TopicCommand JVMs.
  local existing="" deadline=$((SECONDS + START_TIMEOUT_S))
  until existing=$(tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$BOOTSTRAP" --list 2>/dev/null); do
    ((SECONDS < deadline)) || die "broker on $BOOTSTRAP does not answer TopicCommand --list"
    sleep 1
  done

  local spec name parts i pids=() names=()
  for spec in "${TOPICS[@]}"; do
    name=${spec%%:*}
    parts=${spec##*:}
    grep -qxF -- "$name" <<<"$existing" && continue
    tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$BOOTSTRAP" --create --if-not-exists \
      --topic "$name" --partitions "$parts" --replication-factor 1 >/dev/null &
    pids+=($!)
    names+=("$name")
  done
  if ((${#names[@]} == 0)); then
    log "topics present: ${TOPICS[*]%%:*}"
    return 0
  fi
  log "creating topics (TopicCommand, no javac found): ${names[*]}"
  local rc=0
  for i in "${!pids[@]}"; do
    if ! wait "${pids[$i]}"; then
      log "failed to create topic ${names[$i]}"
      rc=1
    fi
  done
  ((rc == 0)) || die "topic creation failed"
}

# ---------------------------------------------------------------------------------------------
# commands

# The local broker shares a small machine with riskstream and the tests. G1's young
# collections take every core at once (~20 ms each, every 2-3 s under the bench's load)
# and its concurrent threads add work; the serial collector stops one core for about as
# long, less often (a fixed 128 MB young generation). On 2 cores that moved the bench's
# p99 at 50k/s from 15-19 ms to under 10 ms and the backlog rate ~15% up
# (docs/PERFORMANCE.md). A production broker on its own host follows Kafka's G1 advice.
DEFAULT_JVM_OPTS="-Xms1g -Xmx1g -Xmn128m -XX:+UseSerialGC"

do_delete_topics() { # exact names; one TopicCommand JVM per 200 (its --topic is a regex)
  local names=("$@") i chunk
  for ((i = 0; i < ${#names[@]}; i += 200)); do
    chunk=$(printf '%s\n' "${names[@]:i:200}" | sed 's/[.[\*^$()+?{}|]/\\&/g' | paste -sd'|')
    tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$BOOTSTRAP" --delete \
      --topic "^($chunk)\$" >/dev/null || return 1
  done
  log "deleted ${#names[@]} topics"
}

do_stop() {
  local pid
  if ! pid=$(broker_pid); then
    log "kafka not running"
    return 0
  fi
  log "stopping kafka (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  local deadline=$((SECONDS + STOP_TIMEOUT_S))
  while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do
    sleep 0.5
  done
  if kill -0 "$pid" 2>/dev/null; then
    log "kafka did not exit within ${STOP_TIMEOUT_S}s; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null; do sleep 0.2; done
  fi
  rm -f "$PIDFILE"
  log "kafka stopped"
}

do_start() {
  local t0=$SECONDS pid
  if pid=$(broker_pid); then
    if [[ "${RISKSTREAM_KAFKA_RESET:-0}" == 1 ]]; then
      log "RISKSTREAM_KAFKA_RESET=1: stopping running broker to wipe its data"
      do_stop
    elif port_open "$HOST" "$PORT"; then
      echo "kafka already running (pid $pid, $BOOTSTRAP)"
      secure_listeners_hint
      return 0
    else
      # Process exists but port not (yet) open: probably another start still in progress.
      wait_for_broker "$pid"
      ensure_topics
      log "kafka running (pid $pid, $BOOTSTRAP)"
      return 0
    fi
  fi

  local p
  for p in "$PORT" "$CONTROLLER_PORT" "$SASL_PORT" "$SSL_PORT"; do
    if port_open "$HOST" "$p"; then
      die "port $p on $HOST is already in use by another process (not ours)"
    fi
  done

  fetch_jars
  make_tls
  write_configs

  if [[ "${RISKSTREAM_KAFKA_RESET:-0}" == 1 ]]; then
    log "RISKSTREAM_KAFKA_RESET=1: wiping $DATA"
    rm -rf "$DATA"
  fi
  format_storage

  log "starting kafka $KAFKA_VERSION (log: $LOGFILE)"
  : >>"$LOGFILE"
  # nohup+setsid: own session, survives the calling shell. fd 9 (our lock) must not leak into it.
  # setsid does not fork here (we are not a group leader), so $! is the JVM's pid.
  nohup setsid "$JAVA" \
    ${RISKSTREAM_KAFKA_JVM_OPTS:-$DEFAULT_JVM_OPTS} \
    -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true \
    "$MARKER" \
    -Dlog4j2.configurationFile="$LOG4J" \
    -cp "$LIBS/*" kafka.Kafka "$PROPS" \
    >>"$LOGFILE" 2>&1 </dev/null 9>&- &
  pid=$!
  echo "$pid" >"$PIDFILE"

  wait_for_broker "$pid"
  ensure_topics
  log "kafka running (pid $pid, $BOOTSTRAP) -- ready in $((SECONDS - t0))s"
}

# A broker started by an older kafka.sh (before the SASL and TLS listeners) keeps running
# without them; `start` stays a no-op on it, but says how to get them.
secure_listeners_hint() {
  if ! port_open "$HOST" "$SASL_PORT" || ! port_open "$HOST" "$SSL_PORT"; then
    log "note: this broker has no SASL_PLAINTEXT :$SASL_PORT / SSL :$SSL_PORT listener (started by an older kafka.sh?);"
    log "      '$0 stop && $0 start' restarts it with them (the security tests need them)"
  fi
}

do_status() {
  local pid
  if pid=$(broker_pid 2>/dev/null); then
    if port_open "$HOST" "$PORT"; then
      echo "running (pid $pid, $BOOTSTRAP)"
      return 0
    fi
    echo "running (pid $pid) but $BOOTSTRAP is not answering"
    return 1
  fi
  echo "stopped"
  return 3
}

main() {
  local cmd=${1:-}
  case "$cmd" in
  start | stop | status) ;;
  topics)
    tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$BOOTSTRAP" --list
    exit
    ;;
  delete-topics)
    shift
    do_delete_topics "$@"
    exit
    ;;
  *)
    echo "usage: $0 start|stop|status|topics|delete-topics NAME..." >&2
    exit 2
    ;;
  esac
  mkdir -p "$KHOME"
  if [[ "$cmd" == status ]]; then
    local rc=0
    do_status || rc=$?
    exit "$rc"
  fi
  # Serialise concurrent start/stop calls on the same home dir.
  exec 9>"$LOCKFILE"
  flock -w 120 9 || die "another kafka.sh start/stop holds $LOCKFILE"
  "do_$cmd"
}

main "$@"
