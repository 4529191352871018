"""What travels on the topic, and its checks (pure: values in, values out; no I/O).

Events and their contract, the Avro encoding, the signed DSSE envelope, the keyring that
says what each key may sign, and the verification checklist a message (and, in ``ledger
verify``, a stored entry) passes before it counts.
"""
