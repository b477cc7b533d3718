"""Packages found automatically: each of the three top folders is a subpackage of `lenstop`
(models/ is lenstop.models, and so on), with every folder below that holds an __init__.py.
The rest of the metadata is in pyproject.toml."""

from setuptools import find_packages, setup

ROOTS = {"models": "lenstop.models", "commands": "lenstop.commands", "tui": "lenstop.tui"}

setup(
    packages=[
        package.replace(folder, name, 1)
        for folder, name in ROOTS.items()
        for package in find_packages(include=[folder, f"{folder}.*"])
    ],
    package_dir={name: folder for folder, name in ROOTS.items()},
)
