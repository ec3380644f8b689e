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
 * The keyed Python step's outputs of one call, one UTF-8 text per kind, back into Kafka records (topic, key,
 * value), key and value as bytes.
 *
 * <p>{@code eval(topics, shapes, texts...)}: topics names one topic per text, separated by ';' (a character no
 * Kafka topic name can hold); shapes says, per text and separated by ';' too, how to read it:
 * <ul>
 *   <li>empty: "key TAB value" lines; every line becomes a record.</li>
 *   <li>{@code K:f1,f2,...}: a JSON array of rows, each a JSON array of the fields f1, f2, ... in order (as
 *   orjson writes them: no white space). Every row becomes a record whose value is the JSON object
 *   {@code {"f1":v1,"f2":v2,...}}, each value's text copied as it is, and whose key is its first K values
 *   (strings unquoted) joined by '|'. Among the rows may stand column blocks: a JSON array of the fields'
 *   columns, each an array of n values or one value that all n records share, the first always an array
 *   (so a block starts with "[[", a row never does: no field of a row is an array). A block's records are
 *   made as its rows would be.</li>
 *   <li>{@code record}: the whole text is one record, its key up to the first tab and its value every byte
 *   after it, whatever they are (a binary value: an Arrow batch of ticks); an empty text is none.</li>
 * </ul>
 *
 * <p>Why rows: in Python a record's dict and the serialisation of its field names cost most of its time
 * (~1.2 of ~1.4 µs); a row is a tuple that orjson writes in bulk, and here, on the JVM's side, the names
 * are copied in. The values keep orjson's text, so a record is byte for byte what orjson.dumps of its dict
 * gives.
 *
 * <p>Why not SQL's SPLIT and UNNEST: they decode the bytes into a string, encode it again, and search it a
 * byte at a time through Flink's memory segments; in a JFR profile that was about half of the keyed task's
 * thread while the outputs went out. Here one pass over the bytes finds the separators, and the records
 * stay bytes up to Kafka. Why all kinds in one call: one table function call feeds the sink through one
 * input, so Flink chains the sink to the Python step's task; five calls joined by UNION ALL gave the sink
 * five inputs, a task of its own, and every record a serialisation and a copy between the two.
 *
 * <p>Neither line separator can occur inside a key (symbols, window names) or a value (JSON escapes both),
 * so the first tab of a line ends its key.
 */
@FunctionHint(output = @DataTypeHint(value = "ROW<topic STRING, k BYTES, v BYTES>", bridgedTo = RowData.class))
public class SplitOutputs extends TableFunction<RowData> {

    private String topicsSeen;
    private String shapesSeen;
    private StringData[] topicNames;
    /** Per text: null for lines, RECORD for one record, else the row shape. */
    private RowShape[] shapes;
    /** The shape of a text that is one record (spec "record"). */
    private static final RowShape RECORD = new RowShape("1:record");
    /** Where the values of a scanned array start and end, per slot (a row uses slot 0, a block's column f slot
     * f); reused from call to call, grown as needed. */
    private int[][] valueStarts = new int[0][];
    private int[][] valueEnds = new int[0][];
    /** How many values the last scanArray found. */
    private int scanned;

    /** How a text of rows becomes records. */
    private static final class RowShape {
        final int keyFields;
        /** {@code {"f1":}, {@code ,"f2":}, ..., then the closing brace. */
        final byte[][] parts;
        /** Their bytes together: a record's value is these plus its values' texts. */
        final int partsLength;

        RowShape(String spec) {
            int colon = spec.indexOf(':');
            if (colon < 0) {
                throw new IllegalArgumentException("split_outputs: a row shape is KEY_FIELDS:field,field,..., got '"
                        + spec + "'");
            }
            keyFields = Integer.parseInt(spec.substring(0, colon));
            String[] fields = spec.substring(colon + 1).split(",", -1);
            if (keyFields < 1 || keyFields > fields.length) {
                throw new IllegalArgumentException("split_outputs: " + keyFields + " key fields of " + fields.length
                        + " in '" + spec + "'");
            }
            parts = new byte[fields.length + 1][];
            for (int i = 0; i < fields.length; i++) {
                parts[i] = ((i == 0 ? "{\"" : ",\"") + fields[i] + "\":").getBytes(StandardCharsets.UTF_8);
            }
            parts[fields.length] = new byte[] {'}'};
            int length = 0;
            for (byte[] part : parts) {
                length += part.length;
            }
            partsLength = length;
        }
    }

    public void eval(String topics, String shapeSpecs, byte[]... texts) {
        if (!topics.equals(topicsSeen) || !shapeSpecs.equals(shapesSeen)) {  // the same literals on every call
            String[] names = topics.split(";", -1);
            String[] specs = shapeSpecs.split(";", -1);
            if (specs.length != names.length) {
                throw new IllegalArgumentException("split_outputs: " + specs.length + " shapes for " + names.length
                        + " topics (" + topics + ")");
            }
            topicNames = new StringData[names.length];
            shapes = new RowShape[names.length];
            for (int i = 0; i < names.length; i++) {
                topicNames[i] = StringData.fromString(names[i]);
                shapes[i] = specs[i].isEmpty() ? null : specs[i].equals("record") ? RECORD : new RowShape(specs[i]);
            }
            topicsSeen = topics;
            shapesSeen = shapeSpecs;
        }
        if (texts.length != topicNames.length) {
            throw new IllegalArgumentException("split_outputs: " + texts.length + " texts for "
                    + topicNames.length + " topics (" + topics + ")");
        }
        for (int i = 0; i < texts.length; i++) {
            if (texts[i] == null) {
                continue;
            }
            if (shapes[i] == null) {
                splitLines(topicNames[i], texts[i]);
            } else if (shapes[i] == RECORD) {
                splitRecord(topicNames[i], texts[i]);
            } else {
                splitRows(topicNames[i], shapes[i], texts[i]);
            }
        }
    }

    private void splitLines(StringData topic, byte[] lines) {
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

    /** One record: key TAB value, the value any bytes (or an empty text: none). */
    private void splitRecord(StringData topic, byte[] text) {
        if (text.length == 0) {
            return;
        }
        int tab = 0;
        while (tab < text.length && text[tab] != '\t') {
            tab++;
        }
        if (tab == text.length) {
            throw new IllegalArgumentException("an output record without a key (no tab): "
                    + new String(text, 0, Math.min(text.length, 300), StandardCharsets.UTF_8));
        }
        collect(GenericRowData.of(topic, Arrays.copyOfRange(text, 0, tab), Arrays.copyOfRange(text, tab + 1, text.length)));
    }

    /** A JSON array of rows (or an empty text: none). */
    private void splitRows(StringData topic, RowShape shape, byte[] text) {
        if (text.length == 0) {
            return;
        }
        int fields = shape.parts.length - 1;
        int pos = expect(text, 0, '[');
        if (pos < text.length && text[pos] == ']') {
            expectEnd(text, pos + 1);
            return;
        }
        while (true) {
            int rowStart = pos;
            if (pos + 1 < text.length && text[pos] == '[' && text[pos + 1] == '[') {
                pos = splitBlock(topic, shape, text, pos);
                if (pos < text.length && text[pos] == ',') {
                    pos++;
                    continue;
                }
                expectEnd(text, expect(text, pos, ']'));
                return;
            }
            pos = scanArray(text, pos, 0, "a row");
            if (scanned != fields) {
                throw malformed(text, rowStart, "a row of " + scanned + " values, not " + fields);
            }
            int[] starts = valueStarts[0];
            int[] ends = valueEnds[0];
            collect(GenericRowData.of(topic, key(text, shape.keyFields, starts, ends), value(text, shape, starts, ends)));
            if (pos < text.length && text[pos] == ',') {
                pos++;
            } else {
                expectEnd(text, expect(text, pos, ']'));
                return;
            }
        }
    }

    /** The column block at pos, its records collected; returns where it ends. */
    private int splitBlock(StringData topic, RowShape shape, byte[] text, int pos) {
        int blockStart = pos;
        int fields = shape.parts.length - 1;
        boolean[] shared = new boolean[fields];
        int[] starts = new int[fields];
        int[] ends = new int[fields];
        int n = -1;
        pos = expect(text, pos, '[');
        for (int f = 0; f < fields; f++) {
            if (f > 0) {
                if (pos < text.length && text[pos] == ']') {
                    throw malformed(text, blockStart, "a block of " + f + " columns, not " + fields);
                }
                pos = expect(text, pos, ',');
            }
            if (pos >= text.length) {
                throw malformed(text, blockStart, "a block cut short");
            }
            if (text[pos] != '[') {
                if (f == 0) {
                    throw malformed(text, blockStart, "a block whose first column is not an array");
                }
                shared[f] = true;
                starts[f] = pos;
                pos = skipValue(text, pos);
                ends[f] = pos;
                continue;
            }
            pos = scanArray(text, pos, f, "a column");
            if (n < 0) {
                n = scanned;
            } else if (scanned != n) {
                throw malformed(text, blockStart, "a column of " + scanned + " values in a block of " + n);
            }
        }
        if (pos < text.length && text[pos] == ',') {
            throw malformed(text, blockStart, "a block of more than " + fields + " columns");
        }
        pos = expect(text, pos, ']');
        for (int r = 0; r < n; r++) {
            for (int f = 0; f < fields; f++) {
                if (!shared[f]) {
                    starts[f] = valueStarts[f][r];
                    ends[f] = valueEnds[f][r];
                }
            }
            collect(GenericRowData.of(topic, key(text, shape.keyFields, starts, ends), value(text, shape, starts, ends)));
        }
        return pos;
    }

    /**
     * The array that opens at pos: its values' starts and ends into valueStarts[slot] and valueEnds[slot], how many
     * into scanned; returns where it ends. what names the array in an error.
     */
    private int scanArray(byte[] text, int pos, int slot, String what) {
        if (valueStarts.length <= slot) {
            valueStarts = Arrays.copyOf(valueStarts, slot + 1);
            valueEnds = Arrays.copyOf(valueEnds, slot + 1);
        }
        if (valueStarts[slot] == null) {
            valueStarts[slot] = new int[16];
            valueEnds[slot] = new int[16];
        }
        int arrayStart = pos;
        pos = expect(text, pos, '[');
        int count = 0;
        if (pos < text.length && text[pos] == ']') {
            scanned = 0;
            return pos + 1;
        }
        while (true) {
            if (count == valueStarts[slot].length) {
                valueStarts[slot] = Arrays.copyOf(valueStarts[slot], count * 2);
                valueEnds[slot] = Arrays.copyOf(valueEnds[slot], count * 2);
            }
            valueStarts[slot][count] = pos;
            pos = skipValue(text, pos);
            valueEnds[slot][count++] = pos;
            if (pos >= text.length) {
                throw malformed(text, arrayStart, what + " cut short");
            }
            if (text[pos] == ',') {
                pos++;
            } else if (text[pos] == ']') {
                scanned = count;
                return pos + 1;
            } else {
                throw malformed(text, arrayStart, "'" + (char) text[pos] + "' after a value");
            }
        }
    }

    private static byte[] value(byte[] text, RowShape shape, int[] starts, int[] ends) {
        int fields = shape.parts.length - 1;  // starts and ends may be longer (scratch arrays)
        int size = shape.partsLength;
        for (int i = 0; i < fields; i++) {
            size += ends[i] - starts[i];
        }
        byte[] out = new byte[size];
        int at = 0;
        for (int i = 0; i < fields; i++) {
            byte[] part = shape.parts[i];
            System.arraycopy(part, 0, out, at, part.length);
            at += part.length;
            int length = ends[i] - starts[i];
            System.arraycopy(text, starts[i], out, at, length);
            at += length;
        }
        out[at] = '}';
        return out;
    }

    private static byte[] key(byte[] text, int keyFields, int[] starts, int[] ends) {
        if (keyFields == 1) {
            return keyPart(text, starts[0], ends[0]);
        }
        // Each part once (keyPart), then joined into a key of its exact size: no growing buffer.
        byte[][] parts = new byte[keyFields][];
        int size = keyFields - 1;
        for (int i = 0; i < keyFields; i++) {
            parts[i] = keyPart(text, starts[i], ends[i]);
            size += parts[i].length;
        }
        byte[] key = new byte[size];
        int at = 0;
        for (int i = 0; i < keyFields; i++) {
            if (i > 0) {
                key[at++] = '|';
            }
            System.arraycopy(parts[i], 0, key, at, parts[i].length);
            at += parts[i].length;
        }
        return key;
    }

    /** A value as key text: a string's content, anything else as written. */
    private static byte[] keyPart(byte[] text, int start, int end) {
        return text[start] == '"' ? unquote(text, start, end) : Arrays.copyOfRange(text, start, end);
    }

    private static boolean noEscape(byte[] text, int start, int end) {
        for (int i = start + 1; i < end - 1; i++) {
            if (text[i] == '\\') {
                return false;
            }
        }
        return true;
    }

    /** A JSON string's content, as UTF-8. */
    private static byte[] unquote(byte[] text, int start, int end) {
        if (noEscape(text, start, end)) {
            return Arrays.copyOfRange(text, start + 1, end - 1);
        }
        StringBuilder out = new StringBuilder();
        String s = new String(text, start + 1, end - start - 2, StandardCharsets.UTF_8);
        for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            if (c != '\\') {
                out.append(c);
                continue;
            }
            char e = s.charAt(++i);
            switch (e) {
                case 'b': out.append('\b'); break;
                case 'f': out.append('\f'); break;
                case 'n': out.append('\n'); break;
                case 'r': out.append('\r'); break;
                case 't': out.append('\t'); break;
                case 'u': out.append((char) Integer.parseInt(s.substring(i + 1, i + 5), 16)); i += 4; break;
                default: out.append(e);  // '"', '\\', '/'
            }
        }
        return out.toString().getBytes(StandardCharsets.UTF_8);
    }

    /**
     * Where the JSON value starting at pos ends (exclusive): a string, a nested array or object, or a scalar.
     * Every record's values pass through here, a byte at a time (in a JFR profile of the full pipeline this
     * scan was the keyed task's hottest code while the outputs went out): a string or a scalar, what orjson
     * writes for every field now, is scanned for the one or three bytes that can end it, not for all six.
     */
    private static int skipValue(byte[] text, int pos) {
        int start = pos;
        int end = text.length;
        if (pos < end) {
            byte b = text[pos];
            if (b == '"') {
                pos = skipString(text, pos);
            } else if (b == '[' || b == '{') {
                pos = skipNested(text, pos);
            } else {
                while (pos < end) {
                    b = text[pos];
                    if (b == ',' || b == ']' || b == '}') {
                        break;
                    }
                    pos++;
                }
            }
        }
        if (pos == start) {
            throw malformed(text, start, "an empty value");
        }
        return pos;
    }

    /** Past the string whose opening quote is at pos. */
    private static int skipString(byte[] text, int pos) {
        int start = pos;
        pos++;
        while (pos < text.length && text[pos] != '"') {
            pos += text[pos] == '\\' ? 2 : 1;
        }
        if (pos >= text.length) {
            throw malformed(text, start, "a string cut short");
        }
        return pos + 1;
    }

    /** Past the array or object that opens at pos (up to the ',' or closing bracket after it, at depth 0). */
    private static int skipNested(byte[] text, int pos) {
        int depth = 0;
        while (pos < text.length) {
            byte b = text[pos];
            if (b == '"') {
                pos = skipString(text, pos);
                continue;
            } else if (b == '[' || b == '{') {
                depth++;
            } else if (b == ']' || b == '}') {
                if (depth == 0) {
                    break;
                }
                depth--;
            } else if (b == ',' && depth == 0) {
                break;
            }
            pos++;
        }
        return pos;
    }

    private static int expect(byte[] text, int pos, char wanted) {
        if (pos >= text.length || text[pos] != wanted) {
            throw malformed(text, pos, "'" + wanted + "' expected");
        }
        return pos + 1;
    }

    private static void expectEnd(byte[] text, int pos) {
        if (pos != text.length) {
            throw malformed(text, pos, "text after the rows");
        }
    }

    private static IllegalArgumentException malformed(byte[] text, int at, String what) {
        // Only a bug in the Python step can make one: fail loudly rather than write a wrong record.
        int from = Math.max(0, Math.min(at, text.length) - 40);
        return new IllegalArgumentException("malformed output rows (" + what + ") at byte " + at + ": "
                + new String(text, from, Math.min(text.length - from, 200), StandardCharsets.UTF_8));
    }
}
