complete -c queue-smtpd -l listen -d 'Listen on ADDR:PORT (127.0.0.1:25, [::1]:25, 0.0.0.0:25, [::]:25). Repeatable' -r
complete -c queue-smtpd -l odmr-listen -d 'Serve ODMR (RFC 2645: AUTH and ATRN, then the held mail down the same connection) on ADDR:PORT, usually port 366; needs odmr_accounts in the configuration. Repeatable' -r
complete -c queue-smtpd -l max-connections -d 'Sessions at once; clients beyond get 421' -r
complete -c queue-smtpd -l max-client-connections -d 'Sessions at once from one client address; more get 421' -r
complete -c queue-smtpd -l max-recipients -d 'Recipients per message; more get 452' -r
complete -c queue-smtpd -l timeout -d 'Seconds a whole command line may take to arrive (and each write)' -r
complete -c queue-smtpd -l data-timeout -d 'Seconds message data may run ahead of the minimum rate: the time DATA may take, plus one second for each --min-data-rate octets received' -r
complete -c queue-smtpd -l min-data-rate -d 'Octets per second message data must average; 0: --data-timeout bounds the whole DATA' -r
complete -c queue-smtpd -l stress-timeout -d 'Seconds for --timeout and --data-timeout while three quarters of the connections are taken' -r
complete -c queue-smtpd -l flush -d 'Internal: see one ETRN request for NODE through (an inetd session hands it off so)' -r
complete -c queue-smtpd -l queue-run -d 'The queue-run program ETRN starts [default: queue-run in this program\'s directory]' -r -F
complete -c queue-smtpd -s C -l config -d 'Configuration file [default: $ETRNQ_CONFIG, else /etc/etrnq/etrnq.toml when it exists]' -r -F
complete -c queue-smtpd -l queue-dir -d 'Queue directory [default: $ETRNQ_QUEUE_DIR, else queue_dir from the configuration, else /var/spool/etrnq]' -r -F
complete -c queue-smtpd -l odmr -d 'With --inetd: the session on standard input is ODMR, not SMTP'
complete -c queue-smtpd -l inetd -d 'Serve one session on standard input and output instead of listening'
complete -c queue-smtpd -s h -l help -d 'Print help (see more with \'--help\')'
complete -c queue-smtpd -s V -l version -d 'Print version'
