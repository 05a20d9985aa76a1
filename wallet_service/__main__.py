from common.bootstrap import serve_main
from wallet_service.bootstrap import NAME, build

serve_main(NAME, build, lambda settings: settings.wallet_listen)
