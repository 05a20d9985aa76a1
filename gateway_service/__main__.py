from common.bootstrap import serve_main
from gateway_service.bootstrap import NAME, build

serve_main(NAME, build, lambda settings: settings.gateway_listen)
