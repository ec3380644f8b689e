package dev.stockmax.flink;

import java.nio.charset.StandardCharsets;
import java.util.Arrays;

import org.apache.flink.table.annotation.DataTypeHint;
import org.apache.flink.table.annotation.FunctionHint;
import org.apache.flink.table.data.GenericRowData;
import org.apache.flink.table.data.RowData;
import org.apache.flink.table.functions.TableFunction;

/**
 * The keyed Python step's outputs of one call, per kind one UTF-8 text of "key TAB value" lines, back into
 * Kafka records (key, value), as bytes.
 *
 * <p>Why not SQL's SPLIT and UNNEST: they decode the bytes into a string, encode it again, and search it a
 * byte at a time through Flink's memory segments; in a JFR profile that was about half of the keyed task's
 * thread while the outputs went out. Here one pass over the bytes finds both separators, and the records
 * stay bytes up to Kafka. Neither separator can occur inside a key (symbols, window names) or a value
 * (JSON escapes both), so the first tab of a line ends its key.
 */
@FunctionHint(output = @DataTypeHint(value = "ROW<k BYTES, v BYTES>", bridgedTo = RowData.class))
public class SplitOutputs extends TableFunction<RowData> {

    public void eval(byte[] lines) {
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
                collect(GenericRowData.of(Arrays.copyOfRange(lines, start, tab), Arrays.copyOfRange(lines, tab + 1, stop)));
            }
            start = stop + 1;
        }
    }
}
