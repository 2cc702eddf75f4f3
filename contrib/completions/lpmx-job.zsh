#compdef lpmx-job

autoload -U is-at-least

_lpmx-job() {
    typeset -A opt_args
    typeset -a _arguments_options
    local ret=1

    if is-at-least 5.2; then
        _arguments_options=(-s -S -C)
    else
        _arguments_options=(-s -C)
    fi

    local context curcontext="$curcontext" state line
    _arguments "${_arguments_options[@]}" : \
'--cache=[Cache directory (overrides LPMX_CACHE and config files)]:DIR:_files' \
'--config=[Config file, in place of LPMX_CONFIG]:FILE:_files' \
'*-v[Say more\: repeat for more detail; errors show their whole chain]' \
'*--verbose[Say more\: repeat for more detail; errors show their whole chain]' \
'(-v --verbose)-q[Say only errors]' \
'(-v --verbose)--quiet[Say only errors]' \
'-h[Print help (see more with '\''--help'\'')]' \
'--help[Print help (see more with '\''--help'\'')]' \
'-V[Print version]' \
'--version[Print version]' \
":: :_lpmx-job_commands" \
"*::: :->lpmx-job" \
&& ret=0
    case $state in
    (lpmx-job)
        words=($line[1] "${words[@]}")
        (( CURRENT += 1 ))
        curcontext="${curcontext%:*:*}:lpmx-job-command-$line[1]:"
        case $line[1] in
            (pull)
_arguments "${_arguments_options[@]}" : \
'--platform=[Platform to pick from a multi-platform image, as os/arch\[/variant\]]:PLATFORM:_default' \
'--jobs=[Layers fetched at once]:N:_default' \
'--cache=[Cache directory (overrides LPMX_CACHE and config files)]:DIR:_files' \
'--config=[Config file, in place of LPMX_CONFIG]:FILE:_files' \
'--json[Print the image records as JSON]' \
'--offline[Touch no network\: succeed only if the cache already holds the image]' \
'*-v[Say more\: repeat for more detail; errors show their whole chain]' \
'*--verbose[Say more\: repeat for more detail; errors show their whole chain]' \
'(-v --verbose)-q[Say only errors]' \
'(-v --verbose)--quiet[Say only errors]' \
'-h[Print help]' \
'--help[Print help]' \
'*::images -- Images\: NAME\[\:TAG\], HOST\:PORT/REPO\:TAG, REPO@sha256\:..., oci\:DIR\[\:TAG\]:_default' \
&& ret=0
;;
(images)
_arguments "${_arguments_options[@]}" : \
'--cache=[Cache directory (overrides LPMX_CACHE and config files)]:DIR:_files' \
'--config=[Config file, in place of LPMX_CONFIG]:FILE:_files' \
'--json[Print as JSON]' \
'*-v[Say more\: repeat for more detail; errors show their whole chain]' \
'*--verbose[Say more\: repeat for more detail; errors show their whole chain]' \
'(-v --verbose)-q[Say only errors]' \
'(-v --verbose)--quiet[Say only errors]' \
'-h[Print help]' \
'--help[Print help]' \
&& ret=0
;;
(rmi)
_arguments "${_arguments_options[@]}" : \
'--cache=[Cache directory (overrides LPMX_CACHE and config files)]:DIR:_files' \
'--config=[Config file, in place of LPMX_CONFIG]:FILE:_files' \
'*-v[Say more\: repeat for more detail; errors show their whole chain]' \
'*--verbose[Say more\: repeat for more detail; errors show their whole chain]' \
'(-v --verbose)-q[Say only errors]' \
'(-v --verbose)--quiet[Say only errors]' \
'-h[Print help]' \
'--help[Print help]' \
'*::images -- Names as pulled, or a manifest digest (prefix):_default' \
&& ret=0
;;
(search)
_arguments "${_arguments_options[@]}" : \
'--registry=[Search this registry'\''s catalog (\`host\:port\`) instead of Docker Hub]:HOST:_default' \
'--limit=[At most this many results]:N:_default' \
'--cache=[Cache directory (overrides LPMX_CACHE and config files)]:DIR:_files' \
'--config=[Config file, in place of LPMX_CONFIG]:FILE:_files' \
'--json[Print as JSON]' \
'*-v[Say more\: repeat for more detail; errors show their whole chain]' \
'*--verbose[Say more\: repeat for more detail; errors show their whole chain]' \
'(-v --verbose)-q[Say only errors]' \
'(-v --verbose)--quiet[Say only errors]' \
'-h[Print help]' \
'--help[Print help]' \
':term -- A word in the image'\''s name (and, on Docker Hub, its description):_default' \
&& ret=0
;;
(login)
_arguments "${_arguments_options[@]}" : \
'-u+[User name]:USERNAME:_default' \
'--username=[User name]:USERNAME:_default' \
'--cache=[Cache directory (overrides LPMX_CACHE and config files)]:DIR:_files' \
'--config=[Config file, in place of LPMX_CONFIG]:FILE:_files' \
'--password-stdin[Read the password from standard input (else it is asked for on the terminal)]' \
'*-v[Say more\: repeat for more detail; errors show their whole chain]' \
'*--verbose[Say more\: repeat for more detail; errors show their whole chain]' \
'(-v --verbose)-q[Say only errors]' \
'(-v --verbose)--quiet[Say only errors]' \
'-h[Print help]' \
'--help[Print help]' \
'::registry -- The registry, as in `ghcr.io` or `host\:port`; Docker Hub when omitted:_default' \
&& ret=0
;;
(logout)
_arguments "${_arguments_options[@]}" : \
'--cache=[Cache directory (overrides LPMX_CACHE and config files)]:DIR:_files' \
'--config=[Config file, in place of LPMX_CONFIG]:FILE:_files' \
'*-v[Say more\: repeat for more detail; errors show their whole chain]' \
'*--verbose[Say more\: repeat for more detail; errors show their whole chain]' \
'(-v --verbose)-q[Say only errors]' \
'(-v --verbose)--quiet[Say only errors]' \
'-h[Print help]' \
'--help[Print help]' \
'::registry -- The registry; Docker Hub when omitted:_default' \
&& ret=0
;;
(tags)
_arguments "${_arguments_options[@]}" : \
'--cache=[Cache directory (overrides LPMX_CACHE and config files)]:DIR:_files' \
'--config=[Config file, in place of LPMX_CONFIG]:FILE:_files' \
'*-v[Say more\: repeat for more detail; errors show their whole chain]' \
'*--verbose[Say more\: repeat for more detail; errors show their whole chain]' \
'(-v --verbose)-q[Say only errors]' \
'(-v --verbose)--quiet[Say only errors]' \
'-h[Print help]' \
'--help[Print help]' \
':repository -- Repository, as in `alpine` or `host\:port/repo`:_default' \
&& ret=0
;;
(cache)
_arguments "${_arguments_options[@]}" : \
'--cache=[Cache directory (overrides LPMX_CACHE and config files)]:DIR:_files' \
'--config=[Config file, in place of LPMX_CONFIG]:FILE:_files' \
'*-v[Say more\: repeat for more detail; errors show their whole chain]' \
'*--verbose[Say more\: repeat for more detail; errors show their whole chain]' \
'(-v --verbose)-q[Say only errors]' \
'(-v --verbose)--quiet[Say only errors]' \
'-h[Print help]' \
'--help[Print help]' \
":: :_lpmx-job__subcmd__cache_commands" \
"*::: :->cache" \
&& ret=0

    case $state in
    (cache)
        words=($line[1] "${words[@]}")
        (( CURRENT += 1 ))
        curcontext="${curcontext%:*:*}:lpmx-job-cache-command-$line[1]:"
        case $line[1] in
            (info)
_arguments "${_arguments_options[@]}" : \
'--cache=[Cache directory (overrides LPMX_CACHE and config files)]:DIR:_files' \
'--config=[Config file, in place of LPMX_CONFIG]:FILE:_files' \
'--json[Print as JSON]' \
'*-v[Say more\: repeat for more detail; errors show their whole chain]' \
'*--verbose[Say more\: repeat for more detail; errors show their whole chain]' \
'(-v --verbose)-q[Say only errors]' \
'(-v --verbose)--quiet[Say only errors]' \
'-h[Print help]' \
'--help[Print help]' \
&& ret=0
;;
(verify)
_arguments "${_arguments_options[@]}" : \
'--cache=[Cache directory (overrides LPMX_CACHE and config files)]:DIR:_files' \
'--config=[Config file, in place of LPMX_CONFIG]:FILE:_files' \
'--repair[Rebuild damaged layers and trees, refetch damaged blobs]' \
'*-v[Say more\: repeat for more detail; errors show their whole chain]' \
'*--verbose[Say more\: repeat for more detail; errors show their whole chain]' \
'(-v --verbose)-q[Say only errors]' \
'(-v --verbose)--quiet[Say only errors]' \
'-h[Print help]' \
'--help[Print help]' \
&& ret=0
;;
(prune)
_arguments "${_arguments_options[@]}" : \
'--older-than=[Also forget images not used for this many days]:DAYS:_default' \
'--cache=[Cache directory (overrides LPMX_CACHE and config files)]:DIR:_files' \
'--config=[Config file, in place of LPMX_CONFIG]:FILE:_files' \
'*-v[Say more\: repeat for more detail; errors show their whole chain]' \
'*--verbose[Say more\: repeat for more detail; errors show their whole chain]' \
'(-v --verbose)-q[Say only errors]' \
'(-v --verbose)--quiet[Say only errors]' \
'-h[Print help]' \
'--help[Print help]' \
&& ret=0
;;
(help)
_arguments "${_arguments_options[@]}" : \
":: :_lpmx-job__subcmd__cache__subcmd__help_commands" \
"*::: :->help" \
&& ret=0

    case $state in
    (help)
        words=($line[1] "${words[@]}")
        (( CURRENT += 1 ))
        curcontext="${curcontext%:*:*}:lpmx-job-cache-help-command-$line[1]:"
        case $line[1] in
            (info)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
(verify)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
(prune)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
(help)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
        esac
    ;;
esac
;;
        esac
    ;;
esac
;;
(run)
_arguments "${_arguments_options[@]}" : \
'*-e+[Set KEY=VALUE inside (repeatable); wins over the host'\''s, the image'\''s and LPMXENV_*]:KEY=VALUE:_default' \
'*--env=[Set KEY=VALUE inside (repeatable); wins over the host'\''s, the image'\''s and LPMXENV_*]:KEY=VALUE:_default' \
'*-b+[Bind a host path inside (repeatable)\: SRC\[\:DST\[\:ro\]\], DST defaulting to SRC]:SRC[:DST[:ro]]:_default' \
'*--bind=[Bind a host path inside (repeatable)\: SRC\[\:DST\[\:ro\]\], DST defaulting to SRC]:SRC[:DST[:ro]]:_default' \
'-w+[Working directory inside \[default\: the image'\''s WorkingDir, else the current directory when bound, else /\]]:DIR:_files' \
'--workdir=[Working directory inside \[default\: the image'\''s WorkingDir, else the current directory when bound, else /\]]:DIR:_files' \
'--write=[Writable root\: changes vanish with the task, or with --write=DIR persist in DIR]::DIR:_files' \
'--platform=[Platform to pick from a multi-platform image, as os/arch\[/variant\]]:PLATFORM:_default' \
'*--host-cmd=[Inside, NAME runs the host'\''s NAME (found on the host'\''s PATH) with the caller'\''s arguments, stdio, signals and directory (repeatable). A set\: @slurm, @sge, @pbs, @lsf, @condor, @mpi. Added to config bridge.commands]:NAME:_default' \
'--mpi=[Which MPI library the command uses\: the image'\''s own, or the host'\''s (config mpi.host), for images built against the same MPI ABI]:MPI:((image\:"The image'\''s own MPI (nothing injected)"
host\:"The host'\''s MPI library and what it needs, first on LD_LIBRARY_PATH"))' \
'--cache=[Cache directory (overrides LPMX_CACHE and config files)]:DIR:_files' \
'--config=[Config file, in place of LPMX_CONFIG]:FILE:_files' \
'--fakeroot[Appear as root (uid 0) inside; files you create are still yours outside]' \
'--cleanenv[Start from the image'\''s environment\: only HOME, USER and TERM come from the host (plus LPMXENV_* and -e)]' \
'--use-entrypoint[Put the image'\''s Entrypoint in front of CMD]' \
'*-v[Say more\: repeat for more detail; errors show their whole chain]' \
'*--verbose[Say more\: repeat for more detail; errors show their whole chain]' \
'(-v --verbose)-q[Say only errors]' \
'(-v --verbose)--quiet[Say only errors]' \
'-h[Print help (see more with '\''--help'\'')]' \
'--help[Print help (see more with '\''--help'\'')]' \
'*::args -- The image, then the command and its arguments \[default\: the image'\''s Entrypoint and Cmd\]. The image\: NAME\[\:TAG\], HOST\:PORT/REPO\:TAG, REPO@sha256\:..., oci\:DIR\[\:TAG\]. Everything after IMAGE is the command'\''s, as with `docker run`, flags included:_default' \
&& ret=0
;;
(doctor)
_arguments "${_arguments_options[@]}" : \
'--cache=[Cache directory (overrides LPMX_CACHE and config files)]:DIR:_files' \
'--config=[Config file, in place of LPMX_CONFIG]:FILE:_files' \
'--json[Print the report as JSON]' \
'*-v[Say more\: repeat for more detail; errors show their whole chain]' \
'*--verbose[Say more\: repeat for more detail; errors show their whole chain]' \
'(-v --verbose)-q[Say only errors]' \
'(-v --verbose)--quiet[Say only errors]' \
'-h[Print help (see more with '\''--help'\'')]' \
'--help[Print help (see more with '\''--help'\'')]' \
&& ret=0
;;
(config)
_arguments "${_arguments_options[@]}" : \
'--cache=[Cache directory (overrides LPMX_CACHE and config files)]:DIR:_files' \
'--config=[Config file, in place of LPMX_CONFIG]:FILE:_files' \
'*-v[Say more\: repeat for more detail; errors show their whole chain]' \
'*--verbose[Say more\: repeat for more detail; errors show their whole chain]' \
'(-v --verbose)-q[Say only errors]' \
'(-v --verbose)--quiet[Say only errors]' \
'-h[Print help]' \
'--help[Print help]' \
":: :_lpmx-job__subcmd__config_commands" \
"*::: :->config" \
&& ret=0

    case $state in
    (config)
        words=($line[1] "${words[@]}")
        (( CURRENT += 1 ))
        curcontext="${curcontext%:*:*}:lpmx-job-config-command-$line[1]:"
        case $line[1] in
            (show)
_arguments "${_arguments_options[@]}" : \
'--cache=[Cache directory (overrides LPMX_CACHE and config files)]:DIR:_files' \
'--config=[Config file, in place of LPMX_CONFIG]:FILE:_files' \
'--json[Print as JSON]' \
'*-v[Say more\: repeat for more detail; errors show their whole chain]' \
'*--verbose[Say more\: repeat for more detail; errors show their whole chain]' \
'(-v --verbose)-q[Say only errors]' \
'(-v --verbose)--quiet[Say only errors]' \
'-h[Print help]' \
'--help[Print help]' \
&& ret=0
;;
(help)
_arguments "${_arguments_options[@]}" : \
":: :_lpmx-job__subcmd__config__subcmd__help_commands" \
"*::: :->help" \
&& ret=0

    case $state in
    (help)
        words=($line[1] "${words[@]}")
        (( CURRENT += 1 ))
        curcontext="${curcontext%:*:*}:lpmx-job-config-help-command-$line[1]:"
        case $line[1] in
            (show)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
(help)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
        esac
    ;;
esac
;;
        esac
    ;;
esac
;;
(prefetch)
_arguments "${_arguments_options[@]}" : \
'--platform=[Platform to pick from a multi-platform image, as os/arch\[/variant\]]:PLATFORM:_default' \
'--cache=[Cache directory (overrides LPMX_CACHE and config files)]:DIR:_files' \
'--config=[Config file, in place of LPMX_CONFIG]:FILE:_files' \
'*-v[Say more\: repeat for more detail; errors show their whole chain]' \
'*--verbose[Say more\: repeat for more detail; errors show their whole chain]' \
'(-v --verbose)-q[Say only errors]' \
'(-v --verbose)--quiet[Say only errors]' \
'-h[Print help (see more with '\''--help'\'')]' \
'--help[Print help (see more with '\''--help'\'')]' \
'*::images -- Images, as for `pull`:_default' \
&& ret=0
;;
(cleanup)
_arguments "${_arguments_options[@]}" : \
'--job=[The job'\''s id (SLURM_JOB_ID, PBS_JOBID, JOB_ID)]:ID:_default' \
'*--dir=[Staging directory to clean (repeatable; default \$TMPDIR, /tmp and /dev/shm)]:DIR:_files' \
'--cache=[Cache directory (overrides LPMX_CACHE and config files)]:DIR:_files' \
'--config=[Config file, in place of LPMX_CONFIG]:FILE:_files' \
'*-v[Say more\: repeat for more detail; errors show their whole chain]' \
'*--verbose[Say more\: repeat for more detail; errors show their whole chain]' \
'(-v --verbose)-q[Say only errors]' \
'(-v --verbose)--quiet[Say only errors]' \
'-h[Print help (see more with '\''--help'\'')]' \
'--help[Print help (see more with '\''--help'\'')]' \
&& ret=0
;;
(expose)
_arguments "${_arguments_options[@]}" : \
'--as=[The wrapper'\''s name (default\: the command'\''s file name)]:NAME:_default' \
'--dir=[Where wrappers go (default\: \$XDG_BIN_HOME, else ~/.local/bin)]:DIR:_files' \
'(--as)--remove=[Remove the wrapper NAME from DIR]:NAME:_default' \
'--cache=[Cache directory (overrides LPMX_CACHE and config files)]:DIR:_files' \
'--config=[Config file, in place of LPMX_CONFIG]:FILE:_files' \
'(--remove --as)--list[List the wrappers in DIR]' \
'--json[Print \`--list\` as JSON]' \
'*-v[Say more\: repeat for more detail; errors show their whole chain]' \
'*--verbose[Say more\: repeat for more detail; errors show their whole chain]' \
'(-v --verbose)-q[Say only errors]' \
'(-v --verbose)--quiet[Say only errors]' \
'-h[Print help]' \
'--help[Print help]' \
'::image -- The image, as for `run`:_default' \
'::command -- The command in the image, e.g. `samtools` or `/usr/bin/python3`:_default' \
&& ret=0
;;
(completions)
_arguments "${_arguments_options[@]}" : \
'--cache=[Cache directory (overrides LPMX_CACHE and config files)]:DIR:_files' \
'--config=[Config file, in place of LPMX_CONFIG]:FILE:_files' \
'*-v[Say more\: repeat for more detail; errors show their whole chain]' \
'*--verbose[Say more\: repeat for more detail; errors show their whole chain]' \
'(-v --verbose)-q[Say only errors]' \
'(-v --verbose)--quiet[Say only errors]' \
'-h[Print help]' \
'--help[Print help]' \
':shell -- bash, zsh, fish, elvish or powershell:(bash elvish fish powershell zsh)' \
&& ret=0
;;
(man)
_arguments "${_arguments_options[@]}" : \
'--dir=[Write lpmx-job.1 and lpmx-job-VERB.1 into DIR]:DIR:_files' \
'--cache=[Cache directory (overrides LPMX_CACHE and config files)]:DIR:_files' \
'--config=[Config file, in place of LPMX_CONFIG]:FILE:_files' \
'*-v[Say more\: repeat for more detail; errors show their whole chain]' \
'*--verbose[Say more\: repeat for more detail; errors show their whole chain]' \
'(-v --verbose)-q[Say only errors]' \
'(-v --verbose)--quiet[Say only errors]' \
'-h[Print help]' \
'--help[Print help]' \
&& ret=0
;;
(help)
_arguments "${_arguments_options[@]}" : \
":: :_lpmx-job__subcmd__help_commands" \
"*::: :->help" \
&& ret=0

    case $state in
    (help)
        words=($line[1] "${words[@]}")
        (( CURRENT += 1 ))
        curcontext="${curcontext%:*:*}:lpmx-job-help-command-$line[1]:"
        case $line[1] in
            (pull)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
(images)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
(rmi)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
(search)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
(login)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
(logout)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
(tags)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
(cache)
_arguments "${_arguments_options[@]}" : \
":: :_lpmx-job__subcmd__help__subcmd__cache_commands" \
"*::: :->cache" \
&& ret=0

    case $state in
    (cache)
        words=($line[1] "${words[@]}")
        (( CURRENT += 1 ))
        curcontext="${curcontext%:*:*}:lpmx-job-help-cache-command-$line[1]:"
        case $line[1] in
            (info)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
(verify)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
(prune)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
        esac
    ;;
esac
;;
(run)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
(doctor)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
(config)
_arguments "${_arguments_options[@]}" : \
":: :_lpmx-job__subcmd__help__subcmd__config_commands" \
"*::: :->config" \
&& ret=0

    case $state in
    (config)
        words=($line[1] "${words[@]}")
        (( CURRENT += 1 ))
        curcontext="${curcontext%:*:*}:lpmx-job-help-config-command-$line[1]:"
        case $line[1] in
            (show)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
        esac
    ;;
esac
;;
(prefetch)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
(cleanup)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
(expose)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
(completions)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
(man)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
(help)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
        esac
    ;;
esac
;;
        esac
    ;;
esac
}

(( $+functions[_lpmx-job_commands] )) ||
_lpmx-job_commands() {
    local commands; commands=(
'pull:Pull images into the cache (one download per blob, however many processes ask)' \
'images:List the images in the cache' \
'rmi:Forget images; their layers go with the next \`cache prune\`' \
'search:Find images\: Docker Hub'\''s search, or a registry'\''s catalog with --registry' \
'login:Store credentials for a registry (in the Docker config, where \`docker login\` puts them)' \
'logout:Remove stored credentials for a registry' \
'tags:List the tags of a repository in its registry' \
'cache:Inspect and maintain the cache' \
'run:Run a command in a container of an image (pulled first when the cache lacks it)' \
'doctor:Check what this host allows\: namespaces, mounts, the cache'\''s filesystem and locks' \
'config:Show the effective configuration' \
'prefetch:Make images ready on this node for a job (for prologs)\: pull into the cache when missing and assemble the tree. Quiet unless -v; a warm image touches no network' \
'cleanup:Remove what a job staged on this node (for epilogs)\: the caller'\''s staging, or every user'\''s when run as root' \
'expose:Make a command of an image callable on the host\: writes a wrapper that runs it in the image with the caller'\''s arguments, working directory and stdio' \
'completions:Print a shell completion script' \
'man:Print the man page, or write one page per verb into a directory' \
'help:Print this message or the help of the given subcommand(s)' \
    )
    _describe -t commands 'lpmx-job commands' commands "$@"
}
(( $+functions[_lpmx-job__subcmd__cache_commands] )) ||
_lpmx-job__subcmd__cache_commands() {
    local commands; commands=(
'info:Where the cache is, its filesystem, lock mode and size by kind' \
'verify:Prove blobs, layers and image trees against their digests; exit 1 and list any fault' \
'prune:Remove layers and blobs no image uses, and images unused for a while' \
'help:Print this message or the help of the given subcommand(s)' \
    )
    _describe -t commands 'lpmx-job cache commands' commands "$@"
}
(( $+functions[_lpmx-job__subcmd__cache__subcmd__help_commands] )) ||
_lpmx-job__subcmd__cache__subcmd__help_commands() {
    local commands; commands=(
'info:Where the cache is, its filesystem, lock mode and size by kind' \
'verify:Prove blobs, layers and image trees against their digests; exit 1 and list any fault' \
'prune:Remove layers and blobs no image uses, and images unused for a while' \
'help:Print this message or the help of the given subcommand(s)' \
    )
    _describe -t commands 'lpmx-job cache help commands' commands "$@"
}
(( $+functions[_lpmx-job__subcmd__cache__subcmd__help__subcmd__help_commands] )) ||
_lpmx-job__subcmd__cache__subcmd__help__subcmd__help_commands() {
    local commands; commands=()
    _describe -t commands 'lpmx-job cache help help commands' commands "$@"
}
(( $+functions[_lpmx-job__subcmd__cache__subcmd__help__subcmd__info_commands] )) ||
_lpmx-job__subcmd__cache__subcmd__help__subcmd__info_commands() {
    local commands; commands=()
    _describe -t commands 'lpmx-job cache help info commands' commands "$@"
}
(( $+functions[_lpmx-job__subcmd__cache__subcmd__help__subcmd__prune_commands] )) ||
_lpmx-job__subcmd__cache__subcmd__help__subcmd__prune_commands() {
    local commands; commands=()
    _describe -t commands 'lpmx-job cache help prune commands' commands "$@"
}
(( $+functions[_lpmx-job__subcmd__cache__subcmd__help__subcmd__verify_commands] )) ||
_lpmx-job__subcmd__cache__subcmd__help__subcmd__verify_commands() {
    local commands; commands=()
    _describe -t commands 'lpmx-job cache help verify commands' commands "$@"
}
(( $+functions[_lpmx-job__subcmd__cache__subcmd__info_commands] )) ||
_lpmx-job__subcmd__cache__subcmd__info_commands() {
    local commands; commands=()
    _describe -t commands 'lpmx-job cache info commands' commands "$@"
}
(( $+functions[_lpmx-job__subcmd__cache__subcmd__prune_commands] )) ||
_lpmx-job__subcmd__cache__subcmd__prune_commands() {
    local commands; commands=()
    _describe -t commands 'lpmx-job cache prune commands' commands "$@"
}
(( $+functions[_lpmx-job__subcmd__cache__subcmd__verify_commands] )) ||
_lpmx-job__subcmd__cache__subcmd__verify_commands() {
    local commands; commands=()
    _describe -t commands 'lpmx-job cache verify commands' commands "$@"
}
(( $+functions[_lpmx-job__subcmd__cleanup_commands] )) ||
_lpmx-job__subcmd__cleanup_commands() {
    local commands; commands=()
    _describe -t commands 'lpmx-job cleanup commands' commands "$@"
}
(( $+functions[_lpmx-job__subcmd__completions_commands] )) ||
_lpmx-job__subcmd__completions_commands() {
    local commands; commands=()
    _describe -t commands 'lpmx-job completions commands' commands "$@"
}
(( $+functions[_lpmx-job__subcmd__config_commands] )) ||
_lpmx-job__subcmd__config_commands() {
    local commands; commands=(
'show:Print every key'\''s effective value and where it came from' \
'help:Print this message or the help of the given subcommand(s)' \
    )
    _describe -t commands 'lpmx-job config commands' commands "$@"
}
(( $+functions[_lpmx-job__subcmd__config__subcmd__help_commands] )) ||
_lpmx-job__subcmd__config__subcmd__help_commands() {
    local commands; commands=(
'show:Print every key'\''s effective value and where it came from' \
'help:Print this message or the help of the given subcommand(s)' \
    )
    _describe -t commands 'lpmx-job config help commands' commands "$@"
}
(( $+functions[_lpmx-job__subcmd__config__subcmd__help__subcmd__help_commands] )) ||
_lpmx-job__subcmd__config__subcmd__help__subcmd__help_commands() {
    local commands; commands=()
    _describe -t commands 'lpmx-job config help help commands' commands "$@"
}
(( $+functions[_lpmx-job__subcmd__config__subcmd__help__subcmd__show_commands] )) ||
_lpmx-job__subcmd__config__subcmd__help__subcmd__show_commands() {
    local commands; commands=()
    _describe -t commands 'lpmx-job config help show commands' commands "$@"
}
(( $+functions[_lpmx-job__subcmd__config__subcmd__show_commands] )) ||
_lpmx-job__subcmd__config__subcmd__show_commands() {
    local commands; commands=()
    _describe -t commands 'lpmx-job config show commands' commands "$@"
}
(( $+functions[_lpmx-job__subcmd__doctor_commands] )) ||
_lpmx-job__subcmd__doctor_commands() {
    local commands; commands=()
    _describe -t commands 'lpmx-job doctor commands' commands "$@"
}
(( $+functions[_lpmx-job__subcmd__expose_commands] )) ||
_lpmx-job__subcmd__expose_commands() {
    local commands; commands=()
    _describe -t commands 'lpmx-job expose commands' commands "$@"
}
(( $+functions[_lpmx-job__subcmd__help_commands] )) ||
_lpmx-job__subcmd__help_commands() {
    local commands; commands=(
'pull:Pull images into the cache (one download per blob, however many processes ask)' \
'images:List the images in the cache' \
'rmi:Forget images; their layers go with the next \`cache prune\`' \
'search:Find images\: Docker Hub'\''s search, or a registry'\''s catalog with --registry' \
'login:Store credentials for a registry (in the Docker config, where \`docker login\` puts them)' \
'logout:Remove stored credentials for a registry' \
'tags:List the tags of a repository in its registry' \
'cache:Inspect and maintain the cache' \
'run:Run a command in a container of an image (pulled first when the cache lacks it)' \
'doctor:Check what this host allows\: namespaces, mounts, the cache'\''s filesystem and locks' \
'config:Show the effective configuration' \
'prefetch:Make images ready on this node for a job (for prologs)\: pull into the cache when missing and assemble the tree. Quiet unless -v; a warm image touches no network' \
'cleanup:Remove what a job staged on this node (for epilogs)\: the caller'\''s staging, or every user'\''s when run as root' \
'expose:Make a command of an image callable on the host\: writes a wrapper that runs it in the image with the caller'\''s arguments, working directory and stdio' \
'completions:Print a shell completion script' \
'man:Print the man page, or write one page per verb into a directory' \
'help:Print this message or the help of the given subcommand(s)' \
    )
    _describe -t commands 'lpmx-job help commands' commands "$@"
}
(( $+functions[_lpmx-job__subcmd__help__subcmd__cache_commands] )) ||
_lpmx-job__subcmd__help__subcmd__cache_commands() {
    local commands; commands=(
'info:Where the cache is, its filesystem, lock mode and size by kind' \
'verify:Prove blobs, layers and image trees against their digests; exit 1 and list any fault' \
'prune:Remove layers and blobs no image uses, and images unused for a while' \
    )
    _describe -t commands 'lpmx-job help cache commands' commands "$@"
}
(( $+functions[_lpmx-job__subcmd__help__subcmd__cache__subcmd__info_commands] )) ||
_lpmx-job__subcmd__help__subcmd__cache__subcmd__info_commands() {
    local commands; commands=()
    _describe -t commands 'lpmx-job help cache info commands' commands "$@"
}
(( $+functions[_lpmx-job__subcmd__help__subcmd__cache__subcmd__prune_commands] )) ||
_lpmx-job__subcmd__help__subcmd__cache__subcmd__prune_commands() {
    local commands; commands=()
    _describe -t commands 'lpmx-job help cache prune commands' commands "$@"
}
(( $+functions[_lpmx-job__subcmd__help__subcmd__cache__subcmd__verify_commands] )) ||
_lpmx-job__subcmd__help__subcmd__cache__subcmd__verify_commands() {
    local commands; commands=()
    _describe -t commands 'lpmx-job help cache verify commands' commands "$@"
}
(( $+functions[_lpmx-job__subcmd__help__subcmd__cleanup_commands] )) ||
_lpmx-job__subcmd__help__subcmd__cleanup_commands() {
    local commands; commands=()
    _describe -t commands 'lpmx-job help cleanup commands' commands "$@"
}
(( $+functions[_lpmx-job__subcmd__help__subcmd__completions_commands] )) ||
_lpmx-job__subcmd__help__subcmd__completions_commands() {
    local commands; commands=()
    _describe -t commands 'lpmx-job help completions commands' commands "$@"
}
(( $+functions[_lpmx-job__subcmd__help__subcmd__config_commands] )) ||
_lpmx-job__subcmd__help__subcmd__config_commands() {
    local commands; commands=(
'show:Print every key'\''s effective value and where it came from' \
    )
    _describe -t commands 'lpmx-job help config commands' commands "$@"
}
(( $+functions[_lpmx-job__subcmd__help__subcmd__config__subcmd__show_commands] )) ||
_lpmx-job__subcmd__help__subcmd__config__subcmd__show_commands() {
    local commands; commands=()
    _describe -t commands 'lpmx-job help config show commands' commands "$@"
}
(( $+functions[_lpmx-job__subcmd__help__subcmd__doctor_commands] )) ||
_lpmx-job__subcmd__help__subcmd__doctor_commands() {
    local commands; commands=()
    _describe -t commands 'lpmx-job help doctor commands' commands "$@"
}
(( $+functions[_lpmx-job__subcmd__help__subcmd__expose_commands] )) ||
_lpmx-job__subcmd__help__subcmd__expose_commands() {
    local commands; commands=()
    _describe -t commands 'lpmx-job help expose commands' commands "$@"
}
(( $+functions[_lpmx-job__subcmd__help__subcmd__help_commands] )) ||
_lpmx-job__subcmd__help__subcmd__help_commands() {
    local commands; commands=()
    _describe -t commands 'lpmx-job help help commands' commands "$@"
}
(( $+functions[_lpmx-job__subcmd__help__subcmd__images_commands] )) ||
_lpmx-job__subcmd__help__subcmd__images_commands() {
    local commands; commands=()
    _describe -t commands 'lpmx-job help images commands' commands "$@"
}
(( $+functions[_lpmx-job__subcmd__help__subcmd__login_commands] )) ||
_lpmx-job__subcmd__help__subcmd__login_commands() {
    local commands; commands=()
    _describe -t commands 'lpmx-job help login commands' commands "$@"
}
(( $+functions[_lpmx-job__subcmd__help__subcmd__logout_commands] )) ||
_lpmx-job__subcmd__help__subcmd__logout_commands() {
    local commands; commands=()
    _describe -t commands 'lpmx-job help logout commands' commands "$@"
}
(( $+functions[_lpmx-job__subcmd__help__subcmd__man_commands] )) ||
_lpmx-job__subcmd__help__subcmd__man_commands() {
    local commands; commands=()
    _describe -t commands 'lpmx-job help man commands' commands "$@"
}
(( $+functions[_lpmx-job__subcmd__help__subcmd__prefetch_commands] )) ||
_lpmx-job__subcmd__help__subcmd__prefetch_commands() {
    local commands; commands=()
    _describe -t commands 'lpmx-job help prefetch commands' commands "$@"
}
(( $+functions[_lpmx-job__subcmd__help__subcmd__pull_commands] )) ||
_lpmx-job__subcmd__help__subcmd__pull_commands() {
    local commands; commands=()
    _describe -t commands 'lpmx-job help pull commands' commands "$@"
}
(( $+functions[_lpmx-job__subcmd__help__subcmd__rmi_commands] )) ||
_lpmx-job__subcmd__help__subcmd__rmi_commands() {
    local commands; commands=()
    _describe -t commands 'lpmx-job help rmi commands' commands "$@"
}
(( $+functions[_lpmx-job__subcmd__help__subcmd__run_commands] )) ||
_lpmx-job__subcmd__help__subcmd__run_commands() {
    local commands; commands=()
    _describe -t commands 'lpmx-job help run commands' commands "$@"
}
(( $+functions[_lpmx-job__subcmd__help__subcmd__search_commands] )) ||
_lpmx-job__subcmd__help__subcmd__search_commands() {
    local commands; commands=()
    _describe -t commands 'lpmx-job help search commands' commands "$@"
}
(( $+functions[_lpmx-job__subcmd__help__subcmd__tags_commands] )) ||
_lpmx-job__subcmd__help__subcmd__tags_commands() {
    local commands; commands=()
    _describe -t commands 'lpmx-job help tags commands' commands "$@"
}
(( $+functions[_lpmx-job__subcmd__images_commands] )) ||
_lpmx-job__subcmd__images_commands() {
    local commands; commands=()
    _describe -t commands 'lpmx-job images commands' commands "$@"
}
(( $+functions[_lpmx-job__subcmd__login_commands] )) ||
_lpmx-job__subcmd__login_commands() {
    local commands; commands=()
    _describe -t commands 'lpmx-job login commands' commands "$@"
}
(( $+functions[_lpmx-job__subcmd__logout_commands] )) ||
_lpmx-job__subcmd__logout_commands() {
    local commands; commands=()
    _describe -t commands 'lpmx-job logout commands' commands "$@"
}
(( $+functions[_lpmx-job__subcmd__man_commands] )) ||
_lpmx-job__subcmd__man_commands() {
    local commands; commands=()
    _describe -t commands 'lpmx-job man commands' commands "$@"
}
(( $+functions[_lpmx-job__subcmd__prefetch_commands] )) ||
_lpmx-job__subcmd__prefetch_commands() {
    local commands; commands=()
    _describe -t commands 'lpmx-job prefetch commands' commands "$@"
}
(( $+functions[_lpmx-job__subcmd__pull_commands] )) ||
_lpmx-job__subcmd__pull_commands() {
    local commands; commands=()
    _describe -t commands 'lpmx-job pull commands' commands "$@"
}
(( $+functions[_lpmx-job__subcmd__rmi_commands] )) ||
_lpmx-job__subcmd__rmi_commands() {
    local commands; commands=()
    _describe -t commands 'lpmx-job rmi commands' commands "$@"
}
(( $+functions[_lpmx-job__subcmd__run_commands] )) ||
_lpmx-job__subcmd__run_commands() {
    local commands; commands=()
    _describe -t commands 'lpmx-job run commands' commands "$@"
}
(( $+functions[_lpmx-job__subcmd__search_commands] )) ||
_lpmx-job__subcmd__search_commands() {
    local commands; commands=()
    _describe -t commands 'lpmx-job search commands' commands "$@"
}
(( $+functions[_lpmx-job__subcmd__tags_commands] )) ||
_lpmx-job__subcmd__tags_commands() {
    local commands; commands=()
    _describe -t commands 'lpmx-job tags commands' commands "$@"
}

if [ "$funcstack[1]" = "_lpmx-job" ]; then
    _lpmx-job "$@"
else
    compdef _lpmx-job lpmx-job
fi
