try {
  Add-Type -TypeDefinition @'
using System;
using System.ComponentModel;
using System.Runtime.InteropServices;

public static class SandfleetLauncher {
    [StructLayout(LayoutKind.Sequential, CharSet = CharSet.Unicode)]
    struct StartupInfoEx {
        public int cb; public IntPtr reserved, desktop, title;
        public int x, y, xSize, ySize, xChars, yChars, fill, flags;
        public short show, reserved2; public IntPtr reserved3, stdIn, stdOut, stdErr, attributes;
    }
    [StructLayout(LayoutKind.Sequential)]
    struct ProcessInfo { public IntPtr process, thread; public int pid, tid; }
    [StructLayout(LayoutKind.Sequential)]
    struct SecurityCapabilities { public IntPtr appContainerSid, capabilities; public int count, reserved; }

    [DllImport("advapi32.dll", SetLastError = true)] static extern bool OpenProcessToken(IntPtr process, int access, out IntPtr token);
    [DllImport("advapi32.dll", SetLastError = true)] static extern bool GetTokenInformation(IntPtr token, int cls, IntPtr info, int length, out int needed);
    [DllImport("advapi32.dll", SetLastError = true)] static extern bool CreateRestrictedToken(IntPtr token, int flags, int disableCount, IntPtr disable, int deleteCount, IntPtr delete, int restrictCount, IntPtr restrict, out IntPtr newToken);
    [DllImport("advapi32.dll", SetLastError = true, CharSet = CharSet.Unicode)] static extern bool ConvertStringSidToSidW(string text, out IntPtr sid);
    [DllImport("advapi32.dll", SetLastError = true, CharSet = CharSet.Unicode)] static extern bool CreateProcessAsUserW(IntPtr token, string application, System.Text.StringBuilder commandLine, IntPtr processAttributes, IntPtr threadAttributes, bool inherit, int flags, IntPtr environment, string cwd, ref StartupInfoEx startup, out ProcessInfo info);
    [DllImport("userenv.dll", CharSet = CharSet.Unicode)] static extern int CreateAppContainerProfile(string name, string display, string description, IntPtr capabilities, int count, out IntPtr sid);
    [DllImport("userenv.dll", CharSet = CharSet.Unicode)] static extern int DeleteAppContainerProfile(string name);
    [DllImport("kernel32.dll", SetLastError = true)] static extern IntPtr GetCurrentProcess();
    [DllImport("kernel32.dll", SetLastError = true)] static extern IntPtr GetStdHandle(int which);
    [DllImport("kernel32.dll", SetLastError = true)] static extern bool SetHandleInformation(IntPtr handle, int mask, int flags);
    [DllImport("kernel32.dll", SetLastError = true)] static extern bool InitializeProcThreadAttributeList(IntPtr list, int count, int flags, ref IntPtr size);
    [DllImport("kernel32.dll", SetLastError = true)] static extern bool UpdateProcThreadAttribute(IntPtr list, int flags, IntPtr attribute, IntPtr value, IntPtr size, IntPtr previous, IntPtr returnSize);
    [DllImport("kernel32.dll", SetLastError = true, CharSet = CharSet.Unicode)] static extern IntPtr CreateJobObjectW(IntPtr attributes, string name);
    [DllImport("kernel32.dll", SetLastError = true)] static extern bool SetInformationJobObject(IntPtr job, int cls, IntPtr info, int length);
    [DllImport("kernel32.dll", SetLastError = true)] static extern bool AssignProcessToJobObject(IntPtr job, IntPtr process);
    [DllImport("kernel32.dll", SetLastError = true)] static extern int ResumeThread(IntPtr thread);
    [DllImport("kernel32.dll", SetLastError = true)] static extern bool TerminateProcess(IntPtr process, int code);
    [DllImport("kernel32.dll", SetLastError = true)] static extern int WaitForSingleObject(IntPtr handle, int milliseconds);
    [DllImport("kernel32.dll", SetLastError = true)] static extern bool GetExitCodeProcess(IntPtr process, out int code);

    static Exception Fail(string what) { return new Win32Exception(Marshal.GetLastWin32Error(), what); }

    static IntPtr Sid(string text) {
        IntPtr sid;
        if (!ConvertStringSidToSidW(text, out sid)) throw Fail("ConvertStringSidToSid " + text);
        return sid;
    }

    // SID_AND_ATTRIBUTES[]: a pointer and a DWORD, padded to pointer alignment.
    static IntPtr SidArray(IntPtr[] sids, int attributes) {
        int stride = 2 * IntPtr.Size;
        IntPtr array = Zeroed(Math.Max(1, sids.Length) * stride);
        for (int i = 0; i < sids.Length; i++) {
            Marshal.WriteIntPtr(array, i * stride, sids[i]);
            Marshal.WriteInt32(array, i * stride + IntPtr.Size, attributes);
        }
        return array;
    }

    static IntPtr Zeroed(int size) {
        IntPtr block = Marshal.AllocHGlobal(size);
        for (int i = 0; i < size; i++) Marshal.WriteByte(block, i, 0);
        return block;
    }

    static IntPtr TokenInfo(IntPtr token, int cls) {
        int size;
        GetTokenInformation(token, cls, IntPtr.Zero, 0, out size);
        IntPtr info = Marshal.AllocHGlobal(size);
        if (!GetTokenInformation(token, cls, info, size, out size)) throw Fail("GetTokenInformation");
        return info;
    }

    // The caller's token restricted to its own user and enabled groups plus the policy SID:
    // the second access check then equals the first, except that deny entries for the policy
    // SID bite (an app container's own check ignores deny entries).
    static IntPtr RestrictedToken(string policySid) {
        IntPtr token;
        if (!OpenProcessToken(GetCurrentProcess(), 0x0002 | 0x0008 | 0x0001 | 0x0080 | 0x0100, out token)) throw Fail("OpenProcessToken");
        var sids = new System.Collections.Generic.List<IntPtr>();
        sids.Add(Marshal.ReadIntPtr(TokenInfo(token, 1)));
        IntPtr groups = TokenInfo(token, 2);
        int count = Marshal.ReadInt32(groups);
        for (int i = 0; i < count; i++) {
            int offset = IntPtr.Size + i * 2 * IntPtr.Size;
            int attributes = Marshal.ReadInt32(groups, offset + IntPtr.Size);
            if ((attributes & 0x4) != 0 && (attributes & 0x20) == 0) sids.Add(Marshal.ReadIntPtr(groups, offset));
        }
        sids.Add(Sid(policySid));
        IntPtr restricted;
        if (!CreateRestrictedToken(token, 0x1, 0, IntPtr.Zero, 0, IntPtr.Zero, sids.Count, SidArray(sids.ToArray(), 0), out restricted)) throw Fail("CreateRestrictedToken");
        return restricted;
    }

    // A fresh app container per task, deleted afterwards: its own profile folder is the one place
    // it may write beyond the policy, and nothing survives the task there.
    public static int Run(string commandLine, string cwd, string policySid, string[] networkSids) {
        string name = "sandfleet." + Guid.NewGuid().ToString("N");
        IntPtr containerSid;
        int hr = CreateAppContainerProfile(name, name, "sandfleet task", IntPtr.Zero, 0, out containerSid);
        if (hr != 0) throw new Win32Exception(hr, "CreateAppContainerProfile");
        try {
            return RunIn(containerSid, commandLine, cwd, policySid, networkSids);
        } finally {
            DeleteAppContainerProfile(name);
        }
    }

    static int RunIn(IntPtr containerSid, string commandLine, string cwd, string policySid, string[] networkSids) {
        IntPtr token = RestrictedToken(policySid);
        var caps = new IntPtr[networkSids.Length + 1];
        caps[0] = Sid(policySid);
        for (int i = 0; i < networkSids.Length; i++) caps[i + 1] = Sid(networkSids[i]);
        var security = new SecurityCapabilities { appContainerSid = containerSid, capabilities = SidArray(caps, 0x4), count = caps.Length };
        IntPtr securityPtr = Marshal.AllocHGlobal(Marshal.SizeOf(security));
        Marshal.StructureToPtr(security, securityPtr, false);

        var std = new System.Collections.Generic.List<IntPtr>();
        foreach (int which in new[] { -10, -11, -12 }) {
            IntPtr handle = GetStdHandle(which);
            if (handle != IntPtr.Zero && handle != new IntPtr(-1) && !std.Contains(handle)) {
                if (!SetHandleInformation(handle, 1, 1)) throw Fail("SetHandleInformation");
                std.Add(handle);
            }
        }
        IntPtr handles = Marshal.AllocHGlobal(Math.Max(1, std.Count) * IntPtr.Size);
        for (int i = 0; i < std.Count; i++) Marshal.WriteIntPtr(handles, i * IntPtr.Size, std[i]);

        IntPtr size = IntPtr.Zero;
        InitializeProcThreadAttributeList(IntPtr.Zero, 2, 0, ref size);
        IntPtr list = Marshal.AllocHGlobal(size);
        if (!InitializeProcThreadAttributeList(list, 2, 0, ref size)) throw Fail("InitializeProcThreadAttributeList");
        if (!UpdateProcThreadAttribute(list, 0, (IntPtr)0x20009, securityPtr, (IntPtr)Marshal.SizeOf(security), IntPtr.Zero, IntPtr.Zero)) throw Fail("PROC_THREAD_ATTRIBUTE_SECURITY_CAPABILITIES");
        if (std.Count > 0 && !UpdateProcThreadAttribute(list, 0, (IntPtr)0x20002, handles, (IntPtr)(std.Count * IntPtr.Size), IntPtr.Zero, IntPtr.Zero)) throw Fail("PROC_THREAD_ATTRIBUTE_HANDLE_LIST");

        var startup = new StartupInfoEx { cb = Marshal.SizeOf(typeof(StartupInfoEx)), flags = 0x100, attributes = list };
        startup.stdIn = GetStdHandle(-10); startup.stdOut = GetStdHandle(-11); startup.stdErr = GetStdHandle(-12);
        ProcessInfo info;
        // EXTENDED_STARTUPINFO_PRESENT | CREATE_SUSPENDED: it joins the job before it runs.
        if (!CreateProcessAsUserW(token, null, new System.Text.StringBuilder(commandLine), IntPtr.Zero, IntPtr.Zero, std.Count > 0, 0x80000 | 0x4, IntPtr.Zero, cwd, ref startup, out info)) throw Fail("CreateProcessAsUser");

        // Kill the whole tree when this launcher goes away (timeout, cancel): JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE.
        int limitSize = IntPtr.Size == 8 ? 144 : 112;
        IntPtr limits = Zeroed(limitSize);
        Marshal.WriteInt32(limits, 16, 0x2000);
        IntPtr job = CreateJobObjectW(IntPtr.Zero, null);
        if (job == IntPtr.Zero || !SetInformationJobObject(job, 9, limits, limitSize) || !AssignProcessToJobObject(job, info.process)) {
            Exception error = Fail("job object");
            TerminateProcess(info.process, 1);
            throw error;
        }
        if (ResumeThread(info.thread) == -1) {
            Exception error = Fail("ResumeThread");
            TerminateProcess(info.process, 1);
            throw error;
        }
        WaitForSingleObject(info.process, -1);
        int code;
        if (!GetExitCodeProcess(info.process, out code)) throw Fail("GetExitCodeProcess");
        return code;
    }
}
'@
  $policy = [xml]$PolicyXml
  $root = $policy.DocumentElement
  $sid = New-Object System.Security.Principal.SecurityIdentifier $root.GetAttribute('sid')
  $rights = @{
    'write'     = [System.Security.AccessControl.FileSystemRights]'Modify'
    'read'      = [System.Security.AccessControl.FileSystemRights]'ReadAndExecute'
    'read-only' = [System.Security.AccessControl.FileSystemRights]'Write, Delete, DeleteSubdirectoriesAndFiles, ChangePermissions, TakeOwnership'
    'deny'      = [System.Security.AccessControl.FileSystemRights]'FullControl'
  }
  foreach ($entry in $root.SelectNodes('path')) {
    $name = $entry.GetAttribute('name')
    $access = $entry.GetAttribute('access')
    $create = $entry.GetAttribute('create')
    if (-not [System.IO.Directory]::Exists($name) -and -not [System.IO.File]::Exists($name)) {
      if (-not $create) { continue }
      $parent = [System.IO.Path]::GetDirectoryName($name)
      if ([System.IO.File]::Exists($parent)) { continue }
      [void][System.IO.Directory]::CreateDirectory($parent)
      if ($create -eq 'dir') { [void][System.IO.Directory]::CreateDirectory($name) }
      else { [System.IO.File]::Open($name, 'CreateNew').Dispose() }
    }
    $isDir = [System.IO.Directory]::Exists($name)
    $inherit = if ($isDir) { [System.Security.AccessControl.InheritanceFlags]'ContainerInherit, ObjectInherit' } else { [System.Security.AccessControl.InheritanceFlags]'None' }
    $type = if ($access -eq 'read' -or $access -eq 'write') { 'Allow' } else { 'Deny' }
    $rule = New-Object System.Security.AccessControl.FileSystemAccessRule($sid, $rights[$access], $inherit, 'None', $type)
    $acl = if ($isDir) { [System.IO.Directory]::GetAccessControl($name, 'Access') } else { [System.IO.File]::GetAccessControl($name, 'Access') }
    $present = $false
    foreach ($old in $acl.GetAccessRules($true, $false, [System.Security.Principal.SecurityIdentifier])) {
      if ($old.IdentityReference -eq $sid -and $old.AccessControlType -eq $rule.AccessControlType -and $old.InheritanceFlags -eq $inherit -and ($old.FileSystemRights -band $rule.FileSystemRights) -eq $rule.FileSystemRights) { $present = $true }
    }
    if (-not $present) {
      $acl.AddAccessRule($rule)
      if ($isDir) { [System.IO.Directory]::SetAccessControl($name, $acl) } else { [System.IO.File]::SetAccessControl($name, $acl) }
    }
  }
  $capabilities = @($root.SelectNodes('capability') | ForEach-Object { $_.GetAttribute('sid') })
  $cwd = $root.SelectSingleNode('cwd').GetAttribute('path')
  $code = [SandfleetLauncher]::Run($CommandLine, $cwd, $sid.Value, [string[]]$capabilities)
} catch {
  [Console]::Error.WriteLine('sandfleet windows launcher: ' + $_.Exception.Message + '; nothing was run')
  [Environment]::Exit(125)
}
[Environment]::Exit($code)
