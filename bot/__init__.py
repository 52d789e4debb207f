"""imagegate's Discord front end (discord.py): slash commands, buttons, context menus.

Entry points: ``python -m bot`` / ``imagegate bot`` (``bot.__main__:run_bot``) and
``bot.app.start_bot(service, settings)`` for running the bot beside other services.
"""
