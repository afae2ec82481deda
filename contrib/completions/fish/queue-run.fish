complete -c queue-run -s R -d 'Recipients in DOMAIN (exactly); @DOMAIN adds its subdomains. Repeatable' -r
complete -c queue-run -s S -d 'Messages whose sender contains SENDER (case-insensitive). Repeatable' -r
complete -c queue-run -s I -d 'Messages whose queue id contains ID. Repeatable' -r
complete -c queue-run -l max-size -d 'Only messages of at most SIZE bytes' -r
complete -c queue-run -l min-size -d 'Only messages of at least SIZE bytes' -r
complete -c queue-run -s j -l jobs -d 'Parallel SMTP connections' -r
complete -c queue-run -l timeout -d 'Time limit in seconds for each SMTP step [default: RFC 5321\'s, 5 to 10 minutes]' -r
complete -c queue-run -l every -d 'Run again every INTERVAL (30m, 1h, ...) until stopped by a signal, like sendmail -q30m' -r
complete -c queue-run -s C -l config -d 'Configuration file [default: $ETRNQ_CONFIG, else /etc/etrnq/etrnq.toml when it exists]' -r -F
complete -c queue-run -l queue-dir -d 'Queue directory [default: $ETRNQ_QUEUE_DIR, else queue_dir from the configuration, else /var/spool/etrnq]' -r -F
complete -c queue-run -s v -l verbose -d 'Show the SMTP conversation on stderr'
complete -c queue-run -s f -l force -d 'Attempt everything now, whatever its next-attempt time (held domains still wait for -R)'
complete -c queue-run -s h -l help -d 'Print help (see more with \'--help\')'
complete -c queue-run -s V -l version -d 'Print version'
