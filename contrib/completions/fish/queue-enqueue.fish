complete -c queue-enqueue -s f -d 'Envelope sender (MAIL FROM); `<>` for none [default: the invoking user]' -r
complete -c queue-enqueue -s F -d 'Full name of the sender, used in a From: header added when the message has none' -r
complete -c queue-enqueue -s N -d 'DSN: when to notify the sender: `never`, or a list of success, failure, delay' -r
complete -c queue-enqueue -s R -d 'DSN: return the `full` message or only its `hdrs` in a bounce' -r
complete -c queue-enqueue -s V -d 'DSN: envelope identifier, returned in bounces' -r
complete -c queue-enqueue -s o -d 'sendmail option (-oi: as -i; -odq, -oem and others: accepted, no effect)' -r
complete -c queue-enqueue -s O -d 'sendmail option (-OName=value): accepted, no effect' -r
complete -c queue-enqueue -s b -d 'sendmail operation mode: only `m` (queue a message) is done here' -r
complete -c queue-enqueue -s B -d 'Body type (7BIT, 8BITMIME): accepted, no effect; the body is stored as it is' -r
complete -c queue-enqueue -s A -d 'sendmail -Am/-Ac: accepted, no effect' -r
complete -c queue-enqueue -s L -d 'sendmail -L tag: accepted, no effect' -r
complete -c queue-enqueue -s C -l config -d 'Configuration file [default: $ETRNQ_CONFIG, else /etc/etrnq/etrnq.toml when it exists]' -r -F
complete -c queue-enqueue -l queue-dir -d 'Queue directory [default: $ETRNQ_QUEUE_DIR, else queue_dir from the configuration, else /var/spool/etrnq]' -r -F
complete -c queue-enqueue -s t -d 'Also take recipients from the To:, Cc: and Bcc: headers (Bcc: is removed)'
complete -c queue-enqueue -s i -d 'A line with a single dot does not end the message (same as -oi)'
complete -c queue-enqueue -s v -d 'Print the queue id of the message'
complete -c queue-enqueue -s U -d 'sendmail -U (initial submission): accepted, no effect'
complete -c queue-enqueue -l help -d 'Print help'
complete -c queue-enqueue -l version -d 'Print version'
