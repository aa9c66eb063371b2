"""The wheel carries the course: grader/, notebooks/ and solutions/ are copied into redis_workbook/course/.

Everything else is in pyproject.toml. The repository folders stay the only source (see
redis_workbook/coursefolder.py for which files count); an editable install reads them in place.
"""

import importlib.util
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
spec = importlib.util.spec_from_file_location("coursefolder", HERE / "src" / "redis_workbook" / "coursefolder.py")
coursefolder = importlib.util.module_from_spec(spec)
spec.loader.exec_module(coursefolder)


class BuildWithCourse(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        if not (HERE / "grader" / "points.toml").is_file():
            raise SystemExit(f"{HERE} has no grader/points.toml: build the wheel from the repository or its sdist.")
        target = Path(self.build_lib) / "redis_workbook" / "course"
        shutil.rmtree(target, ignore_errors=True)  # build/ outlives builds: no file deleted since may stay
        coursefolder.copy(target, HERE)


setup(cmdclass={"build_py": BuildWithCourse})
