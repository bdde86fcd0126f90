"""Maps the top-level folders to the ``perdure`` import root (itself a namespace package).

``platform/`` must stay an implicit namespace package so that it never shadows the standard
library's ``platform`` module when the repository root is on ``sys.path``; pyproject.toml alone
cannot list the remapped sub-packages, so they are discovered here.
"""

from setuptools import find_namespace_packages, setup

FOLDERS = {"platform": "platform", "tenants": "tenants", "billing": "billing", "infra": "infra"}

packages: list[str] = []
package_dir: dict[str, str] = {}
for name, folder in FOLDERS.items():
    packages.append(f"perdure.{name}")
    package_dir[f"perdure.{name}"] = folder
    for sub in find_namespace_packages(where=folder, exclude=["*.__pycache__"]):
        packages.append(f"perdure.{name}.{sub}")

setup(
    packages=packages,
    package_dir=package_dir,
    package_data={
        "perdure.infra": ["local/kafka/pom.xml", "local/ferretdb/*.go", "local/ferretdb/go.*"],
        "perdure.billing": ["price_tables/*.toml"],
        "perdure.platform.console": ["templates/*.html", "static/*"],
    },
)
