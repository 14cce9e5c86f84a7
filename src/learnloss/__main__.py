"""``python -m learnloss`` runs the command line."""

import sys

from learnloss.cli.main import main

sys.exit(main())
