"""SMS and voice reminders through Twilio (built in a later issue)."""
