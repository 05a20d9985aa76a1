from common.bootstrap import serve_main
from recovery_worker.bootstrap import NAME, build

serve_main(NAME, build, lambda settings: settings.recovery_listen, needs_database=False)
