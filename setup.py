"""Only what pyproject.toml cannot say: ship the checkout's top-level search_spaces/ and projects/
inside the package, as robust_transfer/search_spaces/ and robust_transfer/projects/.

The top-level folders stay the canonical copies (users of a checkout and the docs name
`search_spaces/lwf_lambda.yaml`, `projects/table2.yaml`); a wheel maps them into the package so
`rtl search --space lwf_lambda` finds them by name anywhere (robust_transfer/resources.py).
Everything else (metadata, dependencies, extras) is in pyproject.toml.
"""
from setuptools import find_packages, setup

DATA = {"robust_transfer.search_spaces": "search_spaces", "robust_transfer.projects": "projects"}

setup(
    # `platform/` is only the source root: never make it a package (it would shadow the stdlib).
    packages=find_packages("platform") + list(DATA),
    package_dir={"": "platform", **DATA},
    package_data={name: ["*.yaml", "*.yml", "*.md"] for name in DATA},
)
