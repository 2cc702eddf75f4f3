# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_lpmx_job_global_optspecs
    string join \n cache= config= v/verbose q/quiet h/help V/version
end

function __fish_lpmx_job_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_lpmx_job_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_lpmx_job_using_subcommand
    set -l cmd (__fish_lpmx_job_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c lpmx-job -n "__fish_lpmx_job_needs_command" -l cache -d 'Cache directory (overrides LPMX_CACHE and config files)' -r -F
complete -c lpmx-job -n "__fish_lpmx_job_needs_command" -l config -d 'Config file, in place of LPMX_CONFIG' -r -F
complete -c lpmx-job -n "__fish_lpmx_job_needs_command" -s v -l verbose -d 'Say more: repeat for more detail; errors show their whole chain'
complete -c lpmx-job -n "__fish_lpmx_job_needs_command" -s q -l quiet -d 'Say only errors'
complete -c lpmx-job -n "__fish_lpmx_job_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c lpmx-job -n "__fish_lpmx_job_needs_command" -s V -l version -d 'Print version'
complete -c lpmx-job -n "__fish_lpmx_job_needs_command" -f -a "pull" -d 'Pull images into the cache (one download per blob, however many processes ask)'
complete -c lpmx-job -n "__fish_lpmx_job_needs_command" -f -a "images" -d 'List the images in the cache'
complete -c lpmx-job -n "__fish_lpmx_job_needs_command" -f -a "rmi" -d 'Forget images; their layers go with the next `cache prune`'
complete -c lpmx-job -n "__fish_lpmx_job_needs_command" -f -a "search" -d 'Find images: Docker Hub\'s search, or a registry\'s catalog with --registry'
complete -c lpmx-job -n "__fish_lpmx_job_needs_command" -f -a "login" -d 'Store credentials for a registry (in the Docker config, where `docker login` puts them)'
complete -c lpmx-job -n "__fish_lpmx_job_needs_command" -f -a "logout" -d 'Remove stored credentials for a registry'
complete -c lpmx-job -n "__fish_lpmx_job_needs_command" -f -a "tags" -d 'List the tags of a repository in its registry'
complete -c lpmx-job -n "__fish_lpmx_job_needs_command" -f -a "cache" -d 'Inspect and maintain the cache'
complete -c lpmx-job -n "__fish_lpmx_job_needs_command" -f -a "run" -d 'Run a command in a container of an image (pulled first when the cache lacks it)'
complete -c lpmx-job -n "__fish_lpmx_job_needs_command" -f -a "doctor" -d 'Check what this host allows: namespaces, mounts, the cache\'s filesystem and locks'
complete -c lpmx-job -n "__fish_lpmx_job_needs_command" -f -a "config" -d 'Show the effective configuration'
complete -c lpmx-job -n "__fish_lpmx_job_needs_command" -f -a "prefetch" -d 'Make images ready on this node for a job (for prologs): pull into the cache when missing and assemble the tree. Quiet unless -v; a warm image touches no network'
complete -c lpmx-job -n "__fish_lpmx_job_needs_command" -f -a "cleanup" -d 'Remove what a job staged on this node (for epilogs): the caller\'s staging, or every user\'s when run as root'
complete -c lpmx-job -n "__fish_lpmx_job_needs_command" -f -a "expose" -d 'Make a command of an image callable on the host: writes a wrapper that runs it in the image with the caller\'s arguments, working directory and stdio'
complete -c lpmx-job -n "__fish_lpmx_job_needs_command" -f -a "completions" -d 'Print a shell completion script'
complete -c lpmx-job -n "__fish_lpmx_job_needs_command" -f -a "man" -d 'Print the man page, or write one page per verb into a directory'
complete -c lpmx-job -n "__fish_lpmx_job_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand pull" -l platform -d 'Platform to pick from a multi-platform image, as os/arch[/variant]' -r
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand pull" -l jobs -d 'Layers fetched at once' -r
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand pull" -l cache -d 'Cache directory (overrides LPMX_CACHE and config files)' -r -F
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand pull" -l config -d 'Config file, in place of LPMX_CONFIG' -r -F
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand pull" -l json -d 'Print the image records as JSON'
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand pull" -l offline -d 'Touch no network: succeed only if the cache already holds the image'
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand pull" -s v -l verbose -d 'Say more: repeat for more detail; errors show their whole chain'
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand pull" -s q -l quiet -d 'Say only errors'
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand pull" -s h -l help -d 'Print help'
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand images" -l cache -d 'Cache directory (overrides LPMX_CACHE and config files)' -r -F
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand images" -l config -d 'Config file, in place of LPMX_CONFIG' -r -F
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand images" -l json -d 'Print as JSON'
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand images" -s v -l verbose -d 'Say more: repeat for more detail; errors show their whole chain'
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand images" -s q -l quiet -d 'Say only errors'
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand images" -s h -l help -d 'Print help'
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand rmi" -l cache -d 'Cache directory (overrides LPMX_CACHE and config files)' -r -F
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand rmi" -l config -d 'Config file, in place of LPMX_CONFIG' -r -F
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand rmi" -s v -l verbose -d 'Say more: repeat for more detail; errors show their whole chain'
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand rmi" -s q -l quiet -d 'Say only errors'
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand rmi" -s h -l help -d 'Print help'
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand search" -l registry -d 'Search this registry\'s catalog (`host:port`) instead of Docker Hub' -r
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand search" -l limit -d 'At most this many results' -r
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand search" -l cache -d 'Cache directory (overrides LPMX_CACHE and config files)' -r -F
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand search" -l config -d 'Config file, in place of LPMX_CONFIG' -r -F
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand search" -l json -d 'Print as JSON'
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand search" -s v -l verbose -d 'Say more: repeat for more detail; errors show their whole chain'
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand search" -s q -l quiet -d 'Say only errors'
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand search" -s h -l help -d 'Print help'
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand login" -s u -l username -d 'User name' -r
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand login" -l cache -d 'Cache directory (overrides LPMX_CACHE and config files)' -r -F
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand login" -l config -d 'Config file, in place of LPMX_CONFIG' -r -F
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand login" -l password-stdin -d 'Read the password from standard input (else it is asked for on the terminal)'
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand login" -s v -l verbose -d 'Say more: repeat for more detail; errors show their whole chain'
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand login" -s q -l quiet -d 'Say only errors'
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand login" -s h -l help -d 'Print help'
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand logout" -l cache -d 'Cache directory (overrides LPMX_CACHE and config files)' -r -F
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand logout" -l config -d 'Config file, in place of LPMX_CONFIG' -r -F
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand logout" -s v -l verbose -d 'Say more: repeat for more detail; errors show their whole chain'
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand logout" -s q -l quiet -d 'Say only errors'
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand logout" -s h -l help -d 'Print help'
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand tags" -l cache -d 'Cache directory (overrides LPMX_CACHE and config files)' -r -F
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand tags" -l config -d 'Config file, in place of LPMX_CONFIG' -r -F
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand tags" -s v -l verbose -d 'Say more: repeat for more detail; errors show their whole chain'
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand tags" -s q -l quiet -d 'Say only errors'
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand tags" -s h -l help -d 'Print help'
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand cache; and not __fish_seen_subcommand_from info verify prune help" -l cache -d 'Cache directory (overrides LPMX_CACHE and config files)' -r -F
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand cache; and not __fish_seen_subcommand_from info verify prune help" -l config -d 'Config file, in place of LPMX_CONFIG' -r -F
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand cache; and not __fish_seen_subcommand_from info verify prune help" -s v -l verbose -d 'Say more: repeat for more detail; errors show their whole chain'
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand cache; and not __fish_seen_subcommand_from info verify prune help" -s q -l quiet -d 'Say only errors'
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand cache; and not __fish_seen_subcommand_from info verify prune help" -s h -l help -d 'Print help'
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand cache; and not __fish_seen_subcommand_from info verify prune help" -f -a "info" -d 'Where the cache is, its filesystem, lock mode and size by kind'
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand cache; and not __fish_seen_subcommand_from info verify prune help" -f -a "verify" -d 'Prove blobs, layers and image trees against their digests; exit 1 and list any fault'
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand cache; and not __fish_seen_subcommand_from info verify prune help" -f -a "prune" -d 'Remove layers and blobs no image uses, and images unused for a while'
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand cache; and not __fish_seen_subcommand_from info verify prune help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand cache; and __fish_seen_subcommand_from info" -l cache -d 'Cache directory (overrides LPMX_CACHE and config files)' -r -F
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand cache; and __fish_seen_subcommand_from info" -l config -d 'Config file, in place of LPMX_CONFIG' -r -F
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand cache; and __fish_seen_subcommand_from info" -l json -d 'Print as JSON'
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand cache; and __fish_seen_subcommand_from info" -s v -l verbose -d 'Say more: repeat for more detail; errors show their whole chain'
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand cache; and __fish_seen_subcommand_from info" -s q -l quiet -d 'Say only errors'
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand cache; and __fish_seen_subcommand_from info" -s h -l help -d 'Print help'
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand cache; and __fish_seen_subcommand_from verify" -l cache -d 'Cache directory (overrides LPMX_CACHE and config files)' -r -F
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand cache; and __fish_seen_subcommand_from verify" -l config -d 'Config file, in place of LPMX_CONFIG' -r -F
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand cache; and __fish_seen_subcommand_from verify" -l repair -d 'Rebuild damaged layers and trees, refetch damaged blobs'
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand cache; and __fish_seen_subcommand_from verify" -s v -l verbose -d 'Say more: repeat for more detail; errors show their whole chain'
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand cache; and __fish_seen_subcommand_from verify" -s q -l quiet -d 'Say only errors'
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand cache; and __fish_seen_subcommand_from verify" -s h -l help -d 'Print help'
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand cache; and __fish_seen_subcommand_from prune" -l older-than -d 'Also forget images not used for this many days' -r
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand cache; and __fish_seen_subcommand_from prune" -l cache -d 'Cache directory (overrides LPMX_CACHE and config files)' -r -F
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand cache; and __fish_seen_subcommand_from prune" -l config -d 'Config file, in place of LPMX_CONFIG' -r -F
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand cache; and __fish_seen_subcommand_from prune" -s v -l verbose -d 'Say more: repeat for more detail; errors show their whole chain'
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand cache; and __fish_seen_subcommand_from prune" -s q -l quiet -d 'Say only errors'
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand cache; and __fish_seen_subcommand_from prune" -s h -l help -d 'Print help'
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand cache; and __fish_seen_subcommand_from help" -f -a "info" -d 'Where the cache is, its filesystem, lock mode and size by kind'
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand cache; and __fish_seen_subcommand_from help" -f -a "verify" -d 'Prove blobs, layers and image trees against their digests; exit 1 and list any fault'
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand cache; and __fish_seen_subcommand_from help" -f -a "prune" -d 'Remove layers and blobs no image uses, and images unused for a while'
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand cache; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand run" -s e -l env -d 'Set KEY=VALUE inside (repeatable); wins over the host\'s, the image\'s and LPMXENV_*' -r
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand run" -s b -l bind -d 'Bind a host path inside (repeatable): SRC[:DST[:ro]], DST defaulting to SRC' -r
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand run" -s w -l workdir -d 'Working directory inside [default: the image\'s WorkingDir, else the current directory when bound, else /]' -r -F
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand run" -l write -d 'Writable root: changes vanish with the task, or with --write=DIR persist in DIR' -r -F
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand run" -l platform -d 'Platform to pick from a multi-platform image, as os/arch[/variant]' -r
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand run" -l host-cmd -d 'Inside, NAME runs the host\'s NAME (found on the host\'s PATH) with the caller\'s arguments, stdio, signals and directory (repeatable). A set: @slurm, @sge, @pbs, @lsf, @condor, @mpi. Added to config bridge.commands' -r
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand run" -l mpi -d 'Which MPI library the command uses: the image\'s own, or the host\'s (config mpi.host), for images built against the same MPI ABI' -r -f -a "image\t'The image\'s own MPI (nothing injected)'
host\t'The host\'s MPI library and what it needs, first on LD_LIBRARY_PATH'"
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand run" -l cache -d 'Cache directory (overrides LPMX_CACHE and config files)' -r -F
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand run" -l config -d 'Config file, in place of LPMX_CONFIG' -r -F
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand run" -l fakeroot -d 'Appear as root (uid 0) inside; files you create are still yours outside'
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand run" -l cleanenv -d 'Start from the image\'s environment: only HOME, USER and TERM come from the host (plus LPMXENV_* and -e)'
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand run" -l use-entrypoint -d 'Put the image\'s Entrypoint in front of CMD'
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand run" -s v -l verbose -d 'Say more: repeat for more detail; errors show their whole chain'
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand run" -s q -l quiet -d 'Say only errors'
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand run" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand doctor" -l cache -d 'Cache directory (overrides LPMX_CACHE and config files)' -r -F
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand doctor" -l config -d 'Config file, in place of LPMX_CONFIG' -r -F
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand doctor" -l json -d 'Print the report as JSON'
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand doctor" -s v -l verbose -d 'Say more: repeat for more detail; errors show their whole chain'
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand doctor" -s q -l quiet -d 'Say only errors'
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand doctor" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand config; and not __fish_seen_subcommand_from show help" -l cache -d 'Cache directory (overrides LPMX_CACHE and config files)' -r -F
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand config; and not __fish_seen_subcommand_from show help" -l config -d 'Config file, in place of LPMX_CONFIG' -r -F
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand config; and not __fish_seen_subcommand_from show help" -s v -l verbose -d 'Say more: repeat for more detail; errors show their whole chain'
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand config; and not __fish_seen_subcommand_from show help" -s q -l quiet -d 'Say only errors'
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand config; and not __fish_seen_subcommand_from show help" -s h -l help -d 'Print help'
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand config; and not __fish_seen_subcommand_from show help" -f -a "show" -d 'Print every key\'s effective value and where it came from'
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand config; and not __fish_seen_subcommand_from show help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand config; and __fish_seen_subcommand_from show" -l cache -d 'Cache directory (overrides LPMX_CACHE and config files)' -r -F
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand config; and __fish_seen_subcommand_from show" -l config -d 'Config file, in place of LPMX_CONFIG' -r -F
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand config; and __fish_seen_subcommand_from show" -l json -d 'Print as JSON'
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand config; and __fish_seen_subcommand_from show" -s v -l verbose -d 'Say more: repeat for more detail; errors show their whole chain'
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand config; and __fish_seen_subcommand_from show" -s q -l quiet -d 'Say only errors'
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand config; and __fish_seen_subcommand_from show" -s h -l help -d 'Print help'
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand config; and __fish_seen_subcommand_from help" -f -a "show" -d 'Print every key\'s effective value and where it came from'
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand config; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand prefetch" -l platform -d 'Platform to pick from a multi-platform image, as os/arch[/variant]' -r
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand prefetch" -l cache -d 'Cache directory (overrides LPMX_CACHE and config files)' -r -F
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand prefetch" -l config -d 'Config file, in place of LPMX_CONFIG' -r -F
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand prefetch" -s v -l verbose -d 'Say more: repeat for more detail; errors show their whole chain'
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand prefetch" -s q -l quiet -d 'Say only errors'
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand prefetch" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand cleanup" -l job -d 'The job\'s id (SLURM_JOB_ID, PBS_JOBID, JOB_ID)' -r
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand cleanup" -l dir -d 'Staging directory to clean (repeatable; default $TMPDIR, /tmp and /dev/shm)' -r -F
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand cleanup" -l cache -d 'Cache directory (overrides LPMX_CACHE and config files)' -r -F
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand cleanup" -l config -d 'Config file, in place of LPMX_CONFIG' -r -F
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand cleanup" -s v -l verbose -d 'Say more: repeat for more detail; errors show their whole chain'
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand cleanup" -s q -l quiet -d 'Say only errors'
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand cleanup" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand expose" -l as -d 'The wrapper\'s name (default: the command\'s file name)' -r
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand expose" -l dir -d 'Where wrappers go (default: $XDG_BIN_HOME, else ~/.local/bin)' -r -F
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand expose" -l remove -d 'Remove the wrapper NAME from DIR' -r
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand expose" -l cache -d 'Cache directory (overrides LPMX_CACHE and config files)' -r -F
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand expose" -l config -d 'Config file, in place of LPMX_CONFIG' -r -F
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand expose" -l list -d 'List the wrappers in DIR'
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand expose" -l json -d 'Print `--list` as JSON'
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand expose" -s v -l verbose -d 'Say more: repeat for more detail; errors show their whole chain'
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand expose" -s q -l quiet -d 'Say only errors'
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand expose" -s h -l help -d 'Print help'
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand completions" -l cache -d 'Cache directory (overrides LPMX_CACHE and config files)' -r -F
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand completions" -l config -d 'Config file, in place of LPMX_CONFIG' -r -F
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand completions" -s v -l verbose -d 'Say more: repeat for more detail; errors show their whole chain'
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand completions" -s q -l quiet -d 'Say only errors'
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand completions" -s h -l help -d 'Print help'
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand man" -l dir -d 'Write lpmx-job.1 and lpmx-job-VERB.1 into DIR' -r -F
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand man" -l cache -d 'Cache directory (overrides LPMX_CACHE and config files)' -r -F
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand man" -l config -d 'Config file, in place of LPMX_CONFIG' -r -F
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand man" -s v -l verbose -d 'Say more: repeat for more detail; errors show their whole chain'
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand man" -s q -l quiet -d 'Say only errors'
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand man" -s h -l help -d 'Print help'
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand help; and not __fish_seen_subcommand_from pull images rmi search login logout tags cache run doctor config prefetch cleanup expose completions man help" -f -a "pull" -d 'Pull images into the cache (one download per blob, however many processes ask)'
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand help; and not __fish_seen_subcommand_from pull images rmi search login logout tags cache run doctor config prefetch cleanup expose completions man help" -f -a "images" -d 'List the images in the cache'
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand help; and not __fish_seen_subcommand_from pull images rmi search login logout tags cache run doctor config prefetch cleanup expose completions man help" -f -a "rmi" -d 'Forget images; their layers go with the next `cache prune`'
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand help; and not __fish_seen_subcommand_from pull images rmi search login logout tags cache run doctor config prefetch cleanup expose completions man help" -f -a "search" -d 'Find images: Docker Hub\'s search, or a registry\'s catalog with --registry'
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand help; and not __fish_seen_subcommand_from pull images rmi search login logout tags cache run doctor config prefetch cleanup expose completions man help" -f -a "login" -d 'Store credentials for a registry (in the Docker config, where `docker login` puts them)'
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand help; and not __fish_seen_subcommand_from pull images rmi search login logout tags cache run doctor config prefetch cleanup expose completions man help" -f -a "logout" -d 'Remove stored credentials for a registry'
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand help; and not __fish_seen_subcommand_from pull images rmi search login logout tags cache run doctor config prefetch cleanup expose completions man help" -f -a "tags" -d 'List the tags of a repository in its registry'
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand help; and not __fish_seen_subcommand_from pull images rmi search login logout tags cache run doctor config prefetch cleanup expose completions man help" -f -a "cache" -d 'Inspect and maintain the cache'
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand help; and not __fish_seen_subcommand_from pull images rmi search login logout tags cache run doctor config prefetch cleanup expose completions man help" -f -a "run" -d 'Run a command in a container of an image (pulled first when the cache lacks it)'
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand help; and not __fish_seen_subcommand_from pull images rmi search login logout tags cache run doctor config prefetch cleanup expose completions man help" -f -a "doctor" -d 'Check what this host allows: namespaces, mounts, the cache\'s filesystem and locks'
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand help; and not __fish_seen_subcommand_from pull images rmi search login logout tags cache run doctor config prefetch cleanup expose completions man help" -f -a "config" -d 'Show the effective configuration'
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand help; and not __fish_seen_subcommand_from pull images rmi search login logout tags cache run doctor config prefetch cleanup expose completions man help" -f -a "prefetch" -d 'Make images ready on this node for a job (for prologs): pull into the cache when missing and assemble the tree. Quiet unless -v; a warm image touches no network'
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand help; and not __fish_seen_subcommand_from pull images rmi search login logout tags cache run doctor config prefetch cleanup expose completions man help" -f -a "cleanup" -d 'Remove what a job staged on this node (for epilogs): the caller\'s staging, or every user\'s when run as root'
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand help; and not __fish_seen_subcommand_from pull images rmi search login logout tags cache run doctor config prefetch cleanup expose completions man help" -f -a "expose" -d 'Make a command of an image callable on the host: writes a wrapper that runs it in the image with the caller\'s arguments, working directory and stdio'
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand help; and not __fish_seen_subcommand_from pull images rmi search login logout tags cache run doctor config prefetch cleanup expose completions man help" -f -a "completions" -d 'Print a shell completion script'
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand help; and not __fish_seen_subcommand_from pull images rmi search login logout tags cache run doctor config prefetch cleanup expose completions man help" -f -a "man" -d 'Print the man page, or write one page per verb into a directory'
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand help; and not __fish_seen_subcommand_from pull images rmi search login logout tags cache run doctor config prefetch cleanup expose completions man help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand help; and __fish_seen_subcommand_from cache" -f -a "info" -d 'Where the cache is, its filesystem, lock mode and size by kind'
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand help; and __fish_seen_subcommand_from cache" -f -a "verify" -d 'Prove blobs, layers and image trees against their digests; exit 1 and list any fault'
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand help; and __fish_seen_subcommand_from cache" -f -a "prune" -d 'Remove layers and blobs no image uses, and images unused for a while'
complete -c lpmx-job -n "__fish_lpmx_job_using_subcommand help; and __fish_seen_subcommand_from config" -f -a "show" -d 'Print every key\'s effective value and where it came from'
