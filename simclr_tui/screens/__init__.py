"""The app's screens: runs (home), new run, run detail, compare, and the modal dialogs."""
