import sys

from lessons.homework.cli import main

sys.exit(main())
