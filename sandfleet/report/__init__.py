"""Report: what a run tells people and machines, from one stream of events.

:mod:`.events` is what the run emits, :mod:`.outputs` which outputs a run writes and its exit
code, :mod:`.text` the terminal output (with :mod:`.terminal` for colour and the status line),
:mod:`.adhoc` ``sandfleet exec``'s per-host blocks, :mod:`.jsonl` ``--format json``, :mod:`.junit`
JUnit XML, :mod:`.html` the ``--report`` page, :mod:`.results_dir` one file per host,
:mod:`.recap` the tally, :mod:`.merge` the slices' results dirs made one run's, :mod:`.atomic`
whole files or none. Imports the host side's wire format,
:mod:`sandfleet.errors` and :mod:`sandfleet.load` for task names; never run or transports.
"""
