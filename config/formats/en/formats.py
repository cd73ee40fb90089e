"""Display formats of the admin (FORMAT_MODULE_PATH): one UTC time format everywhere, the same
as the admin panels write by hand (credits/admin.py `_when`), and thousands separators.

Only display formats are set; input formats fall through to Django's own for `en`."""

DATETIME_FORMAT = r"Y-m-d H:i:s \U\T\C"
SHORT_DATETIME_FORMAT = DATETIME_FORMAT
DATE_FORMAT = "Y-m-d"
SHORT_DATE_FORMAT = DATE_FORMAT
TIME_FORMAT = "H:i:s"
DECIMAL_SEPARATOR = "."
THOUSAND_SEPARATOR = ","
NUMBER_GROUPING = 3
