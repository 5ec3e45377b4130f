"""A fuzzing harness for the pipeline: mutated inputs added to a valid operator, checked case by case.

* ``encode`` writes records as Avro (its own encoder: any integer, any bytes), Parquet and JSON lines;
* ``values`` mutates single records (boundary numbers for every numeric field, overflowing sums,
  odd strings, and for JSON wrong types, NaN, deep nesting, broken bytes);
* ``structure`` damages whole files (Avro counts, sizes, sync markers, payloads, datums, headers,
  truncation; Parquet pages and footers; JSON text; gzip streams);
* ``cases``, ``record_kinds``, ``file_kinds`` and ``kinds`` make one case from a kind and a seed;
* ``library`` runs the batch pipeline's steps without Beam; ``checks`` says what held;
* ``worker`` runs cases in a child process, ``runner`` drives it with time and memory limits and
  runs some cases through ``usage-rating batch``.

``tests/test_fuzz.py`` runs a short seed-fixed budget; ``perf/fuzz.py`` a million records.
"""
