complete -c odmr-fetch -s p -l port -d 'TCP port (default 366). Same as PROVIDER:PORT' -r
complete -c odmr-fetch -l helo -d 'Name to give in EHLO, and in this site\'s greeting (default: the first of `hostnames`, else this host\'s name)' -r
complete -c odmr-fetch -l timeout -d 'Time limit for connecting and for each reply, in seconds (or 30s, 2m)' -r
complete -c odmr-fetch -l starttls -d 'STARTTLS: `required` (the default) fails unless the provider offers it and its certificate is trusted; `opportunistic` uses it when offered' -r -f -a "required\t''
opportunistic\t''"
complete -c odmr-fetch -l auth-user -d 'The account\'s user name. Its secret comes from --auth-password-file or the ODMR_PASSWORD environment variable, never from the command line' -r
complete -c odmr-fetch -l auth-password-file -d 'File whose first line is the account\'s secret' -r -F
complete -c odmr-fetch -l deliver-to -d 'Hand each message by SMTP to this server of the site [default: 127.0.0.1:25]' -r
complete -c odmr-fetch -l mda -d 'Hand each message to this command on its standard input, run without a shell: %F is the sender, an argument %T the recipients (`/usr/sbin/sendmail -i -f %F -- %T`)' -r
complete -c odmr-fetch -l retry -d 'Try again up to N times after a connection failure or a temporary (4xx) reply, before the turnaround (a link that is still coming up)' -r
complete -c odmr-fetch -l retry-wait -d 'Seconds to wait between tries (or 30s, 2m)' -r
complete -c odmr-fetch -s C -l config -d 'Configuration file (default /etc/etrnq/etrnq.toml, or $ETRNQ_CONFIG)' -r -F
complete -c odmr-fetch -s 4 -d 'Connect over IPv4 only'
complete -c odmr-fetch -s 6 -d 'Connect over IPv6 only'
complete -c odmr-fetch -l no-starttls -d 'Never use STARTTLS (AUTH CRAM-MD5 does not send the secret itself)'
complete -c odmr-fetch -l tls-insecure -d 'Accept any TLS certificate (a provider with a self-signed certificate you know)'
complete -c odmr-fetch -l queue -d 'Put each message into this site\'s etrnq queue (queue-enqueue beside this program, with the same configuration)'
complete -c odmr-fetch -s v -l verbose -d 'Show the SMTP conversation on standard error (the secret is hidden)'
complete -c odmr-fetch -s h -l help -d 'Print help (see more with \'--help\')'
complete -c odmr-fetch -s V -l version -d 'Print version'
