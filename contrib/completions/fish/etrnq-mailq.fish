complete -c etrnq-mailq -s R -d 'Recipients in DOMAIN (exactly); @DOMAIN adds its subdomains. Repeatable' -r
complete -c etrnq-mailq -s S -d 'Messages whose sender contains SENDER (case-insensitive). Repeatable' -r
complete -c etrnq-mailq -s I -d 'Messages whose queue id contains ID. Repeatable' -r
complete -c etrnq-mailq -s b -d 'sendmail\'s -bp (print the queue): accepted, it is what mailq does' -r -f -a "p\t''"
complete -c etrnq-mailq -s C -l config -d 'Configuration file [default: $ETRNQ_CONFIG, else /etc/etrnq/etrnq.toml when it exists]' -r -F
complete -c etrnq-mailq -l queue-dir -d 'Queue directory [default: $ETRNQ_QUEUE_DIR, else queue_dir from the configuration, else /var/spool/etrnq]' -r -F
complete -c etrnq-mailq -s v -l verbose -d 'Print deferral reasons whole instead of cut to fit 80 columns'
complete -c etrnq-mailq -l json -d 'One JSON object per message per line (postqueue -j field names; see mailq(1))'
complete -c etrnq-mailq -l summary -d 'Per recipient domain: messages, bytes, oldest, and counts by age (like qshape)'
complete -c etrnq-mailq -l held -d 'Only messages on administrative hold (queue-admin hold; sendmail\'s -qQ)'
complete -c etrnq-mailq -s h -l help -d 'Print help (see more with \'--help\')'
complete -c etrnq-mailq -s V -l version -d 'Print version'
