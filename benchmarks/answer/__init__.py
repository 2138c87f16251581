"""Select, then answer: the answer endpoint's cost (`bench_answer`, upstream the tiny `vlm`), memory (`answer_memory`)
and parse time (`answer_parse`), and lmms-eval's select-then-answer run (`bench_lmms_answer`, on the `shapes_mc` set,
answered by `shape_reader`)."""
