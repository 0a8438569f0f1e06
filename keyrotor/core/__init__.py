"""Pure decisions and values of a rotation: the model, what to do next, durations, input checks, errors. No I/O.

Everything else imports from here; nothing here imports from the rest of keyrotor.
"""
