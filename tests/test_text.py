from fakefinder._text import format_table, shown


def test_missing_values_read_the_same_in_every_table():
    assert [shown(v) for v in (None, float("nan"), 0.123456, 3, "vgg16")] == ["-", "-", "0.1235", "3", "vgg16"]


def test_columns_are_as_wide_as_their_widest_cell():
    text = format_table(["run", "auc"], [["a", shown(0.5)], ["abcdef", shown(None)]])
    assert text.splitlines() == ["run     auc", "------  ---", "a       0.5", "abcdef  -  "]
    assert format_table(["run"], []).splitlines() == ["run", "---"]


def test_one_way_to_write_a_value_in_each_style():
    assert [shown(0.123456, 3), shown(float("nan"), 3), shown(12.0, 0)] == ["0.123", "-", "12"]
    assert [shown(1e-05, significant=6), shown("adam", quote_text=True), shown(2, quote_text=True)] == [
        "1e-05", "'adam'", "2"]


def test_printable_removes_control_characters_and_escapes_bytes_that_are_not_utf8():
    import os

    from fakefinder._text import printable

    assert printable("a\x1b[31mred\x07\x9b\u202e\tb\nc") == "a[31mred\tb\nc"
    assert printable(os.fsdecode(b"bad\xff.jpg")) == "bad\\xff.jpg"
