import sys

from alps.services.worker.main import main

sys.exit(main())
