import sys

from alps.services.api.main import main

sys.exit(main())
