"""What runs a job on this host, when no Prefect worker does (the embedded path).

- `runner`: `EmbeddedRunner`, the one interface the manager uses (`start`, `cancel`,
  `owns`, `wait`, `recover`, `dismiss_orphan`): it starts each job's process, watches it,
  kills it on dismissal, and takes over the jobs of a server that stopped;
- `launcher`: a warm process (Prefect and pygeoapi imported) that forks one process per job;
- `job_process`: what a job's process runs, Prefect's flow engine on the job's flow run,
  or `direct`;
- `direct`: a stock processor's job without Prefect's flow engine (still a flow run);
- `embedded_api`: the embedded default's Prefect API, Prefect's own server app on SQLite
  in a subprocess, taking writes one at a time.

Why these are ours rather than Prefect's `Runner`/`serve` or a process worker: a worker or
runner polls for scheduled runs (seconds of latency) and starts a fresh interpreter per
run (about a second of imports); forking a warm launcher starts a job in milliseconds
(`docs/benchmarks.md`, figures 2 and 3). The flow engine that runs the job is Prefect's.
"""
