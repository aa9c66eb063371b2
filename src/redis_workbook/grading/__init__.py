"""The autograder: a learner's notebook runs in a sandboxed process, the grader's tests call into it.

Modules, trusted side first:

- `plugin`: the pytest plugin (`--submission`, `--backend`, fixtures `nb`, `r`, `redis_url`).
- `remote`: a notebook's session: its cells, calls into it with the time budget, `nb` proxies, remote handles,
  `Recorder`; `workerprocess`: the worker as a process (start, limits, output, end); `markers`: what a check may
  hand learner code besides plain values and Redis clients (the course's embedders, OpenAI clients, RedisVL).
- `options`: the grading options, declared once for check, grade, gradescope and the plugin.
- `backends`: the Redis under test (embedded, testcontainers or a URL) and its restricted learner user.
- `points`, `results`: points per test (grader/points.toml); the typed results (`Results`, `Record`), and
  from them results.json, feedback and gradebook.
- `check`: `redis-workbook check`, and `self_check` / `require` for the notebooks themselves.
- `grade`: `redis-workbook grade`, a whole class in parallel, resumable.
- `gradescope`: `redis-workbook gradescope`, a Gradescope autograder zip, and its run_autograder side.

Learner side: `worker` (runs the cells with IPython and answers calls) and `sandbox`
(limits, private mounts and process ids, an unprivileged user). The two sides share
only `wire`, a JSON codec, and `markers`: nothing from the worker is ever unpickled.

This package imports nothing heavy at import time: the worker imports it before it
enters its sandbox, which needs a single-threaded process.
"""
