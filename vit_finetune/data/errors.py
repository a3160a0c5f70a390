"""The data pipeline's error for unusable data sets (missing paths, columns, classes, bad images)."""


class DataError(ValueError):
    """A data set that cannot be used as configured; the message names the path, split or column."""
