import sys

from nnunetv2_msvmamba.demo.cli import main

sys.exit(main())
