"""nbgrader's course folder for redis-workbook (run nbgrader from this folder).

`redis-workbook release` fills source/ from ../../solutions/ and runs
`nbgrader generate_assignment` here; release/, submitted/, autograded/, feedback/,
exchange/ and gradebook.db are generated and gitignored. The autograded test cells
call redis_workbook.grading.check.require, so nbgrader's scores are the grader's.
"""

import os
from pathlib import Path

c = get_config()  # noqa: F821 (injected by traitlets)

c.CourseDirectory.course_id = "redis-workbook"
c.CourseDirectory.root = str(Path(__file__).resolve().parent)
# Where `nbgrader release_assignment` / `collect` exchange files; point it at a shared folder on a JupyterHub.
c.Exchange.root = os.environ.get("NBGRADER_EXCHANGE", str(Path(__file__).resolve().parent / "exchange"))
# The learner's stub for a solution region, as in the notebooks' instructions.
c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
# Cells load models and build indexes: give each cell time, but not forever.
c.Execute.timeout = 300
