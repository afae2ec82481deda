complete -c queue-admin -s R -d 'Recipients in DOMAIN (exactly); @DOMAIN adds its subdomains. Repeatable' -r
complete -c queue-admin -s S -d 'Messages whose sender contains SENDER (case-insensitive). Repeatable' -r
complete -c queue-admin -s I -d 'Messages whose queue id contains ID. Repeatable' -r
complete -c queue-admin -l older-than -d 'Only messages that arrived at least INTERVAL ago (30m, 12h, 5d, 2w)' -r
complete -c queue-admin -l wait -d 'Wait up to SECONDS in all for messages a queue run is delivering, instead of skipping them' -r
complete -c queue-admin -s C -l config -d 'Configuration file [default: $ETRNQ_CONFIG, else /etc/etrnq/etrnq.toml when it exists]' -r -F
complete -c queue-admin -l queue-dir -d 'Queue directory [default: $ETRNQ_QUEUE_DIR, else queue_dir from the configuration, else /var/spool/etrnq]' -r -F
complete -c queue-admin -l all -d 'Every message (with other criteria: every message they take)'
complete -c queue-admin -l held -d 'Only messages on administrative hold'
complete -c queue-admin -s n -l dry-run -d 'Print what would be done; change nothing'
complete -c queue-admin -l headers -d 'show: the envelope and the message\'s header section only'
complete -c queue-admin -l body -d 'show: the envelope and the message\'s body only'
complete -c queue-admin -s h -l help -d 'Print help (see more with \'--help\')'
complete -c queue-admin -s V -l version -d 'Print version'
