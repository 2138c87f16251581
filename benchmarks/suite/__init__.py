"""The test suite's time beside a reading of the machine's speed (`suite_time`)."""
