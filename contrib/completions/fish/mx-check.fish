complete -c mx-check -l nameserver -d 'Ask this name server instead of the system resolver (like dig @server); repeat for several. Replaces the configuration\'s dns.nameservers' -r
complete -c mx-check -s C -l config -d 'Configuration file (default $ETRNQ_CONFIG, else /etc/etrnq/etrnq.toml when it exists)' -r -F
complete -c mx-check -l dns-timeout -d 'How long each DNS query waits for an answer per try (each query is tried twice): seconds, or with a unit (s, m)' -r
complete -c mx-check -l port -d 'The SMTP port to probe' -r
complete -c mx-check -l timeout -d 'How long a probe waits to connect and for each reply: seconds, or with a unit (s, m)' -r
complete -c mx-check -l rcpt -d 'With --probe, ask each host whether it accepts mail for ADDRESS: MAIL FROM:<> and RCPT TO:<ADDRESS>, then RSET and QUIT; never DATA, so nothing is delivered. A bare name is taken as a mailbox of DOMAIN (--rcpt postmaster)' -r
complete -c mx-check -l probe -d 'Connect to every address of every MX host and report the greeting, the EHLO extensions (ETRN, STARTTLS, SIZE, PIPELINING, 8BITMIME) and the STARTTLS certificate. Addresses are probed in parallel; output stays in preference order'
complete -c mx-check -l json -d 'Write one JSON object (schema in mx-check(1)) instead of the table'
complete -c mx-check -s h -l help -d 'Print help (see more with \'--help\')'
complete -c mx-check -s V -l version -d 'Print version'
