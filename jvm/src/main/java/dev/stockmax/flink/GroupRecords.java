package dev.stockmax.flink;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.Map;

import org.apache.flink.api.common.typeinfo.TypeInformation;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.streaming.api.operators.AbstractStreamOperator;
import org.apache.flink.streaming.api.operators.BoundedOneInput;
import org.apache.flink.streaming.api.operators.OneInputStreamOperator;
import org.apache.flink.streaming.api.operators.util.PausableRelativeClock;
import org.apache.flink.streaming.api.watermark.Watermark;
import org.apache.flink.streaming.runtime.streamrecord.StreamRecord;
import org.apache.flink.streaming.runtime.watermarkstatus.WatermarkStatus;
import org.apache.flink.types.Row;

/**
 * The ticks topic's records, grouped per partition into one element before the job's Python step.
 *
 * <p>PyFlink costs tens of µs per element that crosses into Python, whatever the element holds; a feed that
 * writes one JSON record per tick would pay that per tick. Here the records of a partition are gathered in
 * the JVM and cross as one element: {@code Row(key INT, Row(partition INT, records BYTES))}, where {@code
 * records} is {@link Group#encode}'s layout (offsets, record timestamps, lengths, then the values), which
 * Python reads with numpy in one call (operators/records.py, RecordGroup), and {@code key} is the partition's
 * key for the keyed Python step ({@code keys[partition % keys.length]}: a partition beyond the keys, a topic
 * grown under the job, shares a known key, so that store marks reach it), which
 * Flink's {@code KeyByKeySelector} reads as PyFlink's own {@code key_by} would have made it. Keying here
 * spares the job a Python step (and a crossing) between the source and the keyed step.
 *
 * <p>Once per attempt, before anything else it emits, it sends every key an empty group: a restored key
 * sets its event-time timer again on its first call (jobs/pipeline.py, SymbolFunction.open, says why), and
 * a key whose input all came before the checkpoint would otherwise never make that call.
 *
 * <p>Before each checkpoint barrier, after the gathered records, it sends every key a store mark: {@code
 * Row(key, Row(-1, no records))}. The Python step keeps its symbols in memory between checkpoints and writes
 * the changed ones to Flink state when the mark comes, so a symbol is pickled once per checkpoint, not at the
 * end of every bundle (jobs/pipeline.py, SymbolFunction). Every subtask marks every key, and a key can change
 * only on an input channel's element or watermark: with aligned checkpoints the last mark a key gets comes
 * after anything that changed it and before the snapshot.
 *
 * <p>When this operator runs as one subtask (the keyed step then has one input channel), a store mark carries
 * the watermark it has sent before it ({@link #markPayload}: 8 bytes, big-endian), which the keyed step's
 * event time is about to reach: a watermark that came while a Python bundle was open is held until the
 * bundle ends, and the checkpoint's own bundle end releases it, after the marks. The keyed step advances its
 * due symbols to it at the mark, as the timer would right after, so that the checkpoint waits for one Python
 * bundle, not two, and a symbol is written once, not again by the timer. With several subtasks a mark carries
 * nothing ({@code NO_RECORDS}): another channel's watermark says nothing about this key's ticks.
 *
 * <p>Event time and exactly-once stay as they were record by record. Everything gathered is emitted before
 * the watermark that follows it ({@link #processWatermark}), so the Python step sees each record under the
 * same watermark as before; before each checkpoint barrier ({@link #prepareSnapshotPreBarrier}), so no
 * record is held in a checkpoint (the operator has no state); and at the end of input. A partition's group
 * is also emitted as soon as it holds {@code maxRecords} records or {@code maxBytes} bytes of values.
 * Within a partition the order is the topic's.
 *
 * <p>Quiet feeds ({@code quietLagMs} > 0): once no record has come for {@code quietAfterMs} (on the clock the
 * source times partition idleness with, which stops while this task is backpressured: a job behind its input is
 * not reading, and its input is not quiet; FLINK-35886), each partition's event time moves on with the wall clock
 * from its newest record, as if its ticks went on coming as late behind the clock as that record came (its lag:
 * when it was read minus its timestamp), and the watermark follows the laggiest partition: now minus the largest
 * lag minus the bound, checked every {@code checkEveryMs}. So the last ticks' outputs do not wait for the next
 * tick, and a feed that stamps its ticks some seconds behind the clock (or ahead of it: another machine's clock)
 * keeps its ticks after a pause: a tick is late then only if it comes more than the bound later than that
 * partition's ticks did. Only a live feed is moved: one whose largest lag is within {@code quietLagMs}. A replay
 * of history, whose records are read long after their timestamps, is never moved; nor is an attempt that has
 * read no record yet. A record stamped further ahead of the clock than {@code maxFutureSkewMs} counts for
 * nothing, as in the source's watermark (jobs/kafka_tables.py).
 *
 * <p>Input: the Kafka table source's rows (value BYTES, partition INT, offset BIGINT, event_ts), with the
 * record timestamp (ms) as the element's timestamp.
 */
public class GroupRecords extends AbstractStreamOperator<Row>
        implements OneInputStreamOperator<Row, Row>, BoundedOneInput {

    private static final long serialVersionUID = 1L;

    /**
     * What this operator emits, as PyFlink reads it: Types.ROW([INT(), GROUP]) with GROUP
     * Types.ROW([INT(), PRIMITIVE_ARRAY(BYTE())]).
     */
    public static TypeInformation<Row> outputType() {
        return Types.ROW(Types.INT, Types.ROW(Types.INT, Types.PRIMITIVE_ARRAY(Types.BYTE)));
    }

    /** An empty group in {@link Group#encode}'s layout: no records. */
    private static final byte[] NO_RECORDS = new byte[4];

    /** The partition field of a store mark (see the class comment): no partition has it. */
    public static final int STORE_MARK = -1;

    private final int[] keys;
    private final int maxRecords;
    private final int maxBytes;
    private final long quietAfterMs;
    private final long checkEveryMs;
    private final long boundMs;
    private final long maxFutureSkewMs;
    private final long quietLagMs;
    private transient Map<Integer, Group> groups;
    private transient long emittedWatermark;
    private transient boolean idle;
    private transient PausableRelativeClock activityClock; // stops while the task is backpressured
    private transient long lastRecordAt; // on activityClock
    private transient boolean keysWoken;

    public GroupRecords(int[] keys, int maxRecords, int maxBytes, long quietAfterMs, long checkEveryMs, long boundMs,
                        long maxFutureSkewMs, long quietLagMs) {
        if (keys.length < 1 || maxRecords < 1 || maxBytes < 1 || quietAfterMs < 1 || checkEveryMs < 1 || boundMs < 0
                || maxFutureSkewMs < 0 || quietLagMs < 0) {
            throw new IllegalArgumentException("keys must not be empty, maxRecords, maxBytes, quietAfterMs and "
                    + "checkEveryMs must be positive, boundMs, maxFutureSkewMs and quietLagMs not negative");
        }
        this.keys = keys.clone();
        this.maxRecords = maxRecords;
        this.maxBytes = maxBytes;
        this.quietAfterMs = quietAfterMs;
        this.checkEveryMs = checkEveryMs;
        this.boundMs = boundMs;
        this.maxFutureSkewMs = maxFutureSkewMs;
        this.quietLagMs = quietLagMs;
    }

    @Override
    public void open() throws Exception {
        super.open();
        groups = new LinkedHashMap<>();
        emittedWatermark = Long.MIN_VALUE;
        keysWoken = false;
        if (quietLagMs > 0) {
            // As the source's own idleness clock (SourceOperator): paused while the task is backpressured.
            activityClock = new PausableRelativeClock(getProcessingTimeService().getClock());
            getContainingTask().getEnvironment().getMetricGroup().getIOMetricGroup()
                    .registerBackPressureListener(activityClock);
            lastRecordAt = activityClock.relativeTimeMillis();
            scheduleQuietCheck();
        }
    }

    @Override
    public void close() throws Exception {
        if (activityClock != null) {
            getContainingTask().getEnvironment().getMetricGroup().getIOMetricGroup()
                    .unregisterBackPressureListener(activityClock);
        }
        super.close();
    }

    private void scheduleQuietCheck() {
        long now = getProcessingTimeService().getCurrentProcessingTime();
        getProcessingTimeService().registerTimer(now + Math.min(quietAfterMs, checkEveryMs), time -> {
            if (activityClock.relativeTimeMillis() - lastRecordAt >= quietAfterMs) {
                moveQuietFeed();
            }
            scheduleQuietCheck();
        });
    }

    /** The quiet-feed rule (see the class comment), once no record has come for quietAfterMs. */
    private void moveQuietFeed() {
        long lag = Long.MIN_VALUE; // the largest of the partitions' lags
        for (Group group : groups.values()) {
            if (group.newestEver != Long.MIN_VALUE) { // a partition that gave a timestamp in this attempt
                lag = Math.max(lag, group.newestReadAt - group.newestEver);
            }
        }
        if (lag == Long.MIN_VALUE || lag > quietLagMs) {
            return;
        }
        // What the laggiest partition's watermark would be had a record come now, as late as its newest.
        long target = getProcessingTimeService().getCurrentProcessingTime() - lag - boundMs - 1;
        if (target > emittedWatermark) {
            emitAll();
            if (idle) {
                idle = false;
                output.emitWatermarkStatus(WatermarkStatus.ACTIVE);
            }
            emit(new Watermark(target));
        }
    }

    @Override
    public void processElement(StreamRecord<Row> element) throws Exception {
        Row row = element.getValue();
        byte[] value = (byte[]) row.getField(0);
        int partition = (Integer) row.getField(1);
        long offset = (Long) row.getField(2);
        wakeKeys();
        Group group = groups.computeIfAbsent(partition, Group::new);
        long timestamp = element.getTimestamp();
        group.add(offset, timestamp, value == null ? new byte[0] : value);
        if (quietLagMs > 0) {
            lastRecordAt = activityClock.relativeTimeMillis();
            if (timestamp > group.newestEver) { // the clock only then: this is the per-record path
                long now = getProcessingTimeService().getCurrentProcessingTime();
                if (timestamp <= now + maxFutureSkewMs) {
                    group.newestEver = timestamp;
                    group.newestReadAt = now;
                }
            }
        }
        if (group.size >= maxRecords || group.bytes >= maxBytes) {
            emit(group);
        }
    }

    @Override
    public void processWatermark(Watermark mark) throws Exception {
        emitAll();
        // Only forward: this operator has no timers, and a quiet feed's watermark may be ahead of the source's.
        if (mark.getTimestamp() > emittedWatermark) {
            emit(mark);
        }
    }

    @Override
    public void processWatermarkStatus(WatermarkStatus status) throws Exception {
        idle = status.isIdle();
        output.emitWatermarkStatus(status);
    }

    private void emit(Watermark mark) {
        emittedWatermark = mark.getTimestamp();
        output.emitWatermark(mark);
    }

    @Override
    public void prepareSnapshotPreBarrier(long checkpointId) throws Exception {
        emitAll();
        byte[] payload = markPayload();
        for (int key : keys) {
            output.collect(new StreamRecord<>(Row.of(key, Row.of(STORE_MARK, payload))));
        }
        super.prepareSnapshotPreBarrier(checkpointId);
    }

    /** What a store mark carries (see the class comment): the watermark sent, or no records. */
    private byte[] markPayload() {
        if (getRuntimeContext().getTaskInfo().getNumberOfParallelSubtasks() != 1
                || emittedWatermark == Long.MIN_VALUE) {
            return NO_RECORDS;
        }
        return ByteBuffer.allocate(Long.BYTES).putLong(emittedWatermark).array();
    }

    @Override
    public void endInput() throws Exception {
        emitAll();
    }

    @Override
    public void finish() throws Exception {
        emitAll();
        super.finish();
    }

    private void wakeKeys() {
        if (keysWoken) {
            return;
        }
        keysWoken = true;
        for (int partition = 0; partition < keys.length; partition++) {
            output.collect(new StreamRecord<>(Row.of(keys[partition], Row.of(partition, NO_RECORDS))));
        }
    }

    /** Everything gathered (and, first thing in an attempt, every key's wake-up). */
    private void emitAll() {
        wakeKeys();
        for (Group group : groups.values()) {
            if (group.size > 0) {
                emit(group);
            }
        }
    }

    private void emit(Group group) {
        int key = keys[group.partition % keys.length];
        output.collect(new StreamRecord<>(Row.of(key, Row.of(group.partition, group.encode())), group.newestTimestamp));
        group.clear();
    }

    /** One partition's gathered records. */
    private static final class Group {
        final int partition;
        long[] offsets = new long[64];
        long[] timestamps = new long[64];
        int[] lengths = new int[64];
        byte[][] values = new byte[64][];
        int size;
        int bytes;
        long newestTimestamp = Long.MIN_VALUE;
        // The newest timestamp read from this partition in this attempt and when it was read (the quiet-feed
        // rule's lag); kept when the group is emitted.
        long newestEver = Long.MIN_VALUE;
        long newestReadAt;

        Group(int partition) {
            this.partition = partition;
        }

        void add(long offset, long timestamp, byte[] value) {
            if (size == offsets.length) {
                int capacity = size * 2;
                offsets = Arrays.copyOf(offsets, capacity);
                timestamps = Arrays.copyOf(timestamps, capacity);
                lengths = Arrays.copyOf(lengths, capacity);
                values = Arrays.copyOf(values, capacity);
            }
            offsets[size] = offset;
            timestamps[size] = timestamp;
            lengths[size] = value.length;
            values[size] = value;
            size++;
            bytes += value.length;
            newestTimestamp = Math.max(newestTimestamp, timestamp);
        }

        /**
         * Little-endian: int32 n, n int64 offsets, n int64 record timestamps (ms), n int32 value lengths, then
         * the n values one after another.
         */
        byte[] encode() {
            ByteBuffer out = ByteBuffer.allocate(4 + size * 20 + bytes).order(ByteOrder.LITTLE_ENDIAN);
            out.putInt(size);
            for (int i = 0; i < size; i++) {
                out.putLong(offsets[i]);
            }
            for (int i = 0; i < size; i++) {
                out.putLong(timestamps[i]);
            }
            for (int i = 0; i < size; i++) {
                out.putInt(lengths[i]);
            }
            for (int i = 0; i < size; i++) {
                out.put(values[i]);
            }
            return out.array();
        }

        void clear() {
            Arrays.fill(values, 0, size, null);
            size = 0;
            bytes = 0;
            newestTimestamp = Long.MIN_VALUE;
        }
    }
}
