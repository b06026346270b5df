"""The tools built on the Detector: the `fastdet` command (cli, with its detect and bench
commands), COCO evaluation (evaluate, with the families' own protocols) and the benchmark's
reports."""
