"""The parts of bench/suite.py, digitq's benchmark suite.

    config.py     paths, goals and defaults, each with its unit
    cli.py        the command line (`python bench/suite.py --help`) and main()
    runner.py     runs the selected sections, writes suite.json, the plots and the report
    harness.py    the embedded stack, the CLI and bare-Keras processes, the jobs they run
    meters.py     how much CPU other processes took while something was measured
    stamps.py     date, commit and CPU of a result; the machine record
    worklog.py    the worker log and a job's history.json, read back
    stats.py      pure statistics: medians, ratios, time-to-accuracy and ensemble bookkeeping
    recipes.py    a job's recipe as `digitq submit-train` flags and words
    store.py      suite.json: strict JSON, loading, keeping results across partial reruns
    text.py       number formatting for the report
    plotting.py   the shared matplotlib set-up of every plot
    report.py     BENCHMARKS.md from the results
    section.py    what a section is (Section) and what it renders with (Context)
    sections/     one module per benchmark, and the registry that orders them

`bench/` is put on sys.path by running bench/suite.py, so this package imports as `benchkit`.
"""
