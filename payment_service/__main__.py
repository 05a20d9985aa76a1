from common.bootstrap import serve_main
from payment_service.bootstrap import NAME, build

serve_main(NAME, build, lambda settings: settings.payment_listen)
