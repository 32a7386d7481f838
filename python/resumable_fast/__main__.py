import sys

from resumable_fast.cli import main

sys.exit(main())
