//! The ports: how the domain reaches the outside world. Each trait says which error comes back when;
//! adapters translate driver errors into these variants, never the reverse.

pub mod generator;
pub mod live_store;
pub mod lock;
pub mod logs;
pub mod probe;
pub mod queue;
pub mod repository;
pub mod sandbox;
pub mod usage;

pub use generator::{CodeGenerator, GeneratedFile, GeneratedFiles, GeneratorError};
pub use live_store::{EventStream, LiveJobStore, StoreError};
pub use lock::{LockGuardToken, StepLock};
pub use logs::{ArchivedLog, LiveLog, LogArchive, LogError, LogWakeups};
pub use probe::{PreviewProbe, ProbeError, ProbeResponse, ProxyAnswer};
pub use queue::{JobQueue, Lease, QueueError, QueuedJob};
pub use repository::{
    Admitted, JobRepository, PageAfter, RepoError, SandboxSeconds, SandboxStateUpdate,
    TransitionOutcome, TransitionUpdate,
};
pub use sandbox::{
    BackgroundCommand, CommandExit, CommandOutput, CommandSpec, ExitReporter, OutputCatchUp,
    OutputSink, OutputStream, PauseOutcome, PreviewCredential, ProviderSandbox, ProviderState,
    SandboxError, SandboxRuntime, SandboxSpec,
};
pub use usage::DailyUsage;
