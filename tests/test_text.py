from fakefinder._text import cell, format_table


def test_missing_values_read_the_same_in_every_table():
    assert [cell(v) for v in (None, float("nan"), 0.123456, 3, "vgg16")] == ["-", "-", "0.1235", "3", "vgg16"]


def test_columns_are_as_wide_as_their_widest_cell():
    text = format_table(["run", "auc"], [["a", cell(0.5)], ["abcdef", cell(None)]])
    assert text.splitlines() == ["run     auc", "------  ---", "a       0.5", "abcdef  -  "]
    assert format_table(["run"], []).splitlines() == ["run", "---"]
