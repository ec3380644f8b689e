package dev.stockmax.flink;

import java.nio.charset.StandardCharsets;
import java.util.Arrays;

import org.apache.flink.table.annotation.DataTypeHint;
import org.apache.flink.table.annotation.FunctionHint;
import org.apache.flink.table.data.GenericRowData;
import org.apache.flink.table.data.RowData;
import org.apache.flink.table.data.StringData;
import org.apache.flink.table.functions.TableFunction;

/**
 * The keyed Python step's outputs of one call, per kind one UTF-8 text of "key TAB value" lines, back into
 * Kafka records (topic, key, value), key and value as bytes.
 *
 * <p>{@code eval(topics, texts...)}: topics names one topic per text, separated by ';' (a character no Kafka
 * topic name can hold); every line of the i-th text becomes a record for the i-th topic.
 *
 * <p>Why not SQL's SPLIT and UNNEST: they decode the bytes into a string, encode it again, and search it a
 * byte at a time through Flink's memory segments; in a JFR profile that was about half of the keyed task's
 * thread while the outputs went out. Here one pass over the bytes finds both separators, and the records
 * stay bytes up to Kafka. Why all kinds in one call: one table function call feeds the sink through one
 * input, so Flink chains the sink to the Python step's task; five calls joined by UNION ALL gave the sink
 * five inputs, a task of its own, and every record a serialisation and a copy between the two.
 *
 * <p>Neither separator can occur inside a key (symbols, window names) or a value (JSON escapes both), so
 * the first tab of a line ends its key.
 */
@FunctionHint(output = @DataTypeHint(value = "ROW<topic STRING, k BYTES, v BYTES>", bridgedTo = RowData.class))
public class SplitOutputs extends TableFunction<RowData> {

    private String topicsSeen;
    private StringData[] topicNames;

    public void eval(String topics, byte[]... texts) {
        if (!topics.equals(topicsSeen)) {  // the same literal on every call: parsed once
            String[] names = topics.split(";", -1);
            topicNames = new StringData[names.length];
            for (int i = 0; i < names.length; i++) {
                topicNames[i] = StringData.fromString(names[i]);
            }
            topicsSeen = topics;
        }
        if (texts.length != topicNames.length) {
            throw new IllegalArgumentException("split_outputs: " + texts.length + " texts for "
                    + topicNames.length + " topics (" + topics + ")");
        }
        for (int i = 0; i < texts.length; i++) {
            split(topicNames[i], texts[i]);
        }
    }

    private void split(StringData topic, byte[] lines) {
        if (lines == null) {
            return;
        }
        int end = lines.length;
        int start = 0;
        while (start < end) {
            int stop = start;
            int tab = -1;
            while (stop < end && lines[stop] != '\n') {
                if (tab < 0 && lines[stop] == '\t') {
                    tab = stop;
                }
                stop++;
            }
            if (stop > start) {  // empty lines carry nothing (an empty text is one)
                if (tab < 0) {
                    // Only a bug in the Python step can make one: fail loudly rather than write a keyless record.
                    throw new IllegalArgumentException("an output line without a key (no tab): "
                            + new String(lines, start, Math.min(stop - start, 300), StandardCharsets.UTF_8));
                }
                collect(GenericRowData.of(topic, Arrays.copyOfRange(lines, start, tab),
                        Arrays.copyOfRange(lines, tab + 1, stop)));
            }
            start = stop + 1;
        }
    }
}
