"""``python -m sms.local_twilio --account-sid AC... --auth-token ...``: see ``command.main``."""

from sms.local_twilio.command import main

if __name__ == "__main__":
    raise SystemExit(main())
