package org.etam.demo

import android.content.pm.PackageManager
import androidx.activity.result.contract.ActivityResultContracts
import androidx.appcompat.app.AppCompatActivity
import androidx.core.content.ContextCompat

/**
 * A runtime permission a screen needs: `request()` runs `onGranted` at once when it is granted,
 * otherwise asks the system, and shows `deniedMessage` when the user says no. Create it as a
 * property of the activity (it registers for a result, which must happen before onStart).
 */
class PermissionGate(
    private val activity: AppCompatActivity,
    private val permission: String,
    private val deniedMessage: String,
    private val onDenied: (String) -> Unit,
    private val onGranted: () -> Unit
) {
    private val launcher = activity.registerForActivityResult(ActivityResultContracts.RequestPermission()) { granted ->
        if (granted) onGranted() else onDenied(deniedMessage)
    }

    fun request() {
        if (ContextCompat.checkSelfPermission(activity, permission) == PackageManager.PERMISSION_GRANTED) onGranted()
        else launcher.launch(permission)
    }
}
