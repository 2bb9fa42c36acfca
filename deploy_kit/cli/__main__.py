"""``python -m deploy_kit.cli``: the ``deploy-kit`` command."""

from . import main

main()
