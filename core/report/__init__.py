"""Reporting: what the command line and the TUI show of runs and results, torch-free.

* ``tables``   a header and rows as CSV, markdown or a LaTeX tabular (``latex_escape``);
* ``states``   the colour of each run state, the same in ``simclr runs`` and the TUI;
* ``groups``   which config keys define a setting (``NOT_A_SETTING``) and which differ;
* ``listing``  the records of ``simclr runs`` and ``simclr queue`` (``--format json``);
* ``console``  those records as a Rich table and as the queue's text lines.

``core.evaluation.results`` (``simclr results``) builds its table with ``tables`` and
``groups``; ``simclr_tui`` takes its export files, state colours and setting keys from here.
"""
